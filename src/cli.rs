//! The `quotask` command line: serving by default, and administering users and plans on
//! the same database without HTTP (`quotask user ...`, `quotask plan ...`), through the
//! same use cases as the API.

use std::io::{BufRead as _, IsTerminal as _};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Settings};
use crate::domain::Role;
use crate::service::accounts::AuthError;
use crate::service::admin::{AdaptRule, UserUpdate};

/// quotask: a todo-task API in which every user may create at most N tasks per day,
/// the day being the user's own calendar day in their time zone.
///
/// With no subcommand, serves HTTP. Every flag can also be set through the
/// environment variable shown beside it.
#[derive(Parser)]
#[command(name = "quotask", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage users directly in the database.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage plans directly in the database.
    #[command(subcommand)]
    Plan(PlanCommand),
}

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Create a plan with a daily limit (0 to 1000000).
    Create {
        name: String,
        #[arg(allow_negative_numbers = true)]
        limit: i64,
        /// An adaptive rule: STEP,AFTER_DAYS_AT_LIMIT,MAX,AFTER_IDLE_DAYS,MIN.
        #[arg(long)]
        adapt: Option<String>,
    },
    /// List plans.
    List,
    /// Set a plan's daily limit; applies at once to all its users, today too.
    Set {
        name: String,
        #[arg(allow_negative_numbers = true)]
        limit: Option<i64>,
        /// A new adaptive rule (STEP,AFTER_DAYS_AT_LIMIT,MAX,AFTER_IDLE_DAYS,MIN), or `none`.
        #[arg(long)]
        adapt: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin (or prompted for on a terminal).
    Create {
        name: String,
        /// Give the user the admin role.
        #[arg(long)]
        admin: bool,
        /// Time zone (IANA name); default: QUOTASK_DEFAULT_TIMEZONE.
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Set a user's own daily limit (0 to 1000000), or `none` to drop it (their plan's,
    /// else the default, applies); at once, to today too.
    SetLimit {
        name: String,
        #[arg(allow_negative_numbers = true)]
        limit: String,
    },
    /// Put a user on a plan (`none`: off any plan); at once, to today too.
    SetPlan { name: String, plan: String },
    /// Grant a user EXTRA units on each local day from --from to --to (inclusive).
    Boost {
        name: String,
        #[arg(allow_negative_numbers = true)]
        extra: i64,
        /// First local day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last local day, YYYY-MM-DD.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List users with their limits and today's use.
    List,
}

/// Runs `command` with `settings`.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => app::serve(settings, Arc::new(SystemClock)).await,
        Command::User(cmd) => user(cmd, &settings).await,
        Command::Plan(cmd) => plan(cmd, &settings).await,
    }
}

/// `STEP,AFTER_DAYS_AT_LIMIT,MAX,AFTER_IDLE_DAYS,MIN`.
fn adapt_rule(raw: &str) -> anyhow::Result<AdaptRule> {
    let parts: Vec<i64> = raw.split(',').map(|p| p.trim().parse::<i64>()).collect::<Result<_, _>>().map_err(|_| {
        anyhow::anyhow!("adapt: expected STEP,AFTER_DAYS_AT_LIMIT,MAX,AFTER_IDLE_DAYS,MIN as whole numbers")
    })?;
    let [step, after_days_at_limit, max, after_idle_days, min] = parts[..] else {
        anyhow::bail!("adapt: expected five numbers: STEP,AFTER_DAYS_AT_LIMIT,MAX,AFTER_IDLE_DAYS,MIN");
    };
    Ok(AdaptRule { step, after_days_at_limit, max, after_idle_days, min })
}

fn show_plan(plan: &crate::domain::limits::Plan) -> String {
    let adapt = crate::domain::limits::describe_adapt(plan.adapt.as_ref());
    format!("{}: daily limit {}, adapt {adapt}", plan.name, plan.daily_limit)
}

async fn plan(cmd: PlanCommand, settings: &Settings) -> anyhow::Result<()> {
    let app = App::build(settings, Arc::new(SystemClock)).await?;
    let admin = &app.services.admin;
    let now = SystemClock.now();
    match cmd {
        PlanCommand::Create { name, limit, adapt } => {
            let adapt = adapt.as_deref().map(adapt_rule).transpose()?;
            let plan = admin.create_plan(None, &name, limit, adapt, now).await.map_err(|e| explain(e, &name))?;
            println!("created plan {}", show_plan(&plan));
        }
        PlanCommand::List => {
            for plan in admin.plans().await? {
                println!("{}", show_plan(&plan));
            }
        }
        PlanCommand::Set { name, limit, adapt } => {
            let adapt = match adapt.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(raw) => Some(Some(adapt_rule(raw)?)),
            };
            let plan = admin.update_plan(None, &name, limit, adapt, now).await.map_err(|e| match e {
                crate::service::Error::NotFound => anyhow::anyhow!("no plan {name:?}"),
                other => explain(other, &name),
            })?;
            println!("{}", show_plan(&plan));
        }
    }
    Ok(())
}

async fn user(cmd: UserCommand, settings: &Settings) -> anyhow::Result<()> {
    let app = App::build(settings, Arc::new(SystemClock)).await?;
    let services = &app.services;
    let now = SystemClock.now();
    match cmd {
        UserCommand::Create { name, admin, timezone } => {
            let password = read_password()?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = services.accounts.sign_up(&name, password, timezone.as_deref(), role, None, now).await.map_err(
                |e| match e {
                    AuthError::Invalid(errors) => anyhow::anyhow!("{}", describe(&errors)),
                    other => anyhow::anyhow!("{other}"),
                },
            )?;
            println!("created {} ({}) id {}", user.username, user.role.as_str(), user.id);
        }
        UserCommand::SetLimit { name, limit } => {
            let limit =
                match limit.as_str() {
                    "none" => None,
                    n => Some(n.parse::<i64>().map_err(|_| {
                        anyhow::anyhow!("daily_limit: must be a whole number from 0 to 1000000, or none")
                    })?),
                };
            let user = services.admin.user_named(&name).await.map_err(|e| explain(e, &name))?;
            let update = UserUpdate { daily_limit: Some(limit), ..UserUpdate::default() };
            let changed =
                services.admin.update_user(None, user.id, update, now).await.map_err(|e| explain(e, &name))?;
            let (before, (after, source)) = (user.base_limit(now).0, changed.base_limit(now));
            println!("{}: daily limit {before} -> {after} ({})", user.username, source.as_str());
        }
        UserCommand::SetPlan { name, plan } => {
            let user = services.admin.user_named(&name).await.map_err(|e| explain(e, &name))?;
            let plan = (plan != "none").then_some(plan);
            let update = UserUpdate { plan: Some(plan), ..UserUpdate::default() };
            let changed =
                services.admin.update_user(None, user.id, update, now).await.map_err(|e| explain(e, &name))?;
            let (limit, source) = changed.base_limit(now);
            let plan = changed.limits.plan.as_ref().map_or("none", |(p, _, _)| &**p).to_owned();
            println!("{}: plan {plan}, daily limit {limit} ({})", changed.username, source.as_str());
            if changed.limits.limit_is_own {
                println!(
                    "note: {}'s own limit overrides the plan; `quotask user set-limit {} none` drops it",
                    changed.username, changed.username
                );
            }
        }
        UserCommand::Boost { name, extra, from, to, reason } => {
            let user = services.admin.user_named(&name).await.map_err(|e| explain(e, &name))?;
            let boost = services
                .admin
                .add_boost(None, user.id, extra, &from, &to, reason, now)
                .await
                .map_err(|e| explain(e, &name))?;
            println!("{}: boost {}", user.username, boost.describe());
        }
        UserCommand::List => {
            let mut after = None;
            println!("{:<36}  {:<24}  {:<6}  {:>8}  {:>8}  timezone", "id", "username", "role", "limit", "used");
            loop {
                let page = services.admin.list_users(after, 100, None, now).await?;
                for (user, used) in &page {
                    let zone = user.zone.effective(now).as_str();
                    println!(
                        "{:<36}  {:<24}  {:<6}  {:>8}  {:>8}  {zone}",
                        user.id,
                        user.username,
                        user.role.as_str(),
                        user.base_limit(now).0,
                        used
                    );
                }
                match page.last() {
                    Some((user, _)) if page.len() == 100 => after = Some(user.id),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

fn describe(errors: &[crate::domain::FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}

/// A use case's refusal as one line for the operator.
fn explain(e: crate::service::Error, name: &str) -> anyhow::Error {
    match e {
        crate::service::Error::NotFound => anyhow::anyhow!("no user {name:?}"),
        crate::service::Error::Invalid(errors) => anyhow::anyhow!("{}", describe(&errors)),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The password from a prompt on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
