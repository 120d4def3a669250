//! The `quotask` command line: serving by default, and administering users on the same
//! database without HTTP (`quotask user ...`), through the same use cases as the API.

use std::io::{BufRead as _, IsTerminal as _};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Settings};
use crate::domain::Role;
use crate::service::accounts::AuthError;

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
    /// Set a user's daily limit (0 to 1000000); applies at once, to today too.
    SetLimit {
        name: String,
        #[arg(allow_negative_numbers = true)]
        limit: i64,
    },
    /// List users with their limits and today's use.
    List,
}

/// Runs `command` with `settings`.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => app::serve(settings, Arc::new(SystemClock)).await,
        Command::User(cmd) => user(cmd, &settings).await,
    }
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
            let user = services.admin.user_named(&name).await.map_err(|e| explain(e, &name))?;
            let changed = services
                .admin
                .update_user(None, user.id, Some(limit), None, now)
                .await
                .map_err(|e| explain(e, &name))?;
            println!("{}: daily limit {} -> {}", user.username, user.daily_limit, changed.daily_limit);
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
                        user.daily_limit,
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
