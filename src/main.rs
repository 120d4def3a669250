//! The `quotask` command: serves by default, and administers users on the same
//! database without HTTP (`quotask user ...`).

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use quotask::app;
use quotask::clock::{Clock, SystemClock};
use quotask::config::{Config, LogFormat, Settings};
use quotask::domain::{DailyLimit, Role, Username};
use quotask::events::Kind;
use quotask::store::AdminChanges;
use serde_json::json;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quotask: a todo-task API in which every user may create at most N tasks per day,
/// the day being the user's own calendar day in their time zone.
///
/// With no subcommand, serves HTTP. Every flag can also be set through the
/// environment variable shown beside it.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage users directly in the database.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.config.log_format);
    let settings = match cli.config.validate() {
        Ok(settings) => settings,
        Err(line) => {
            eprintln!("quotask: {line}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quotask: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => app::serve(settings, Arc::new(SystemClock)).await,
            Command::User(cmd) => user_command(cmd, settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quotask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn user_command(cmd: UserCommand, settings: Settings) -> anyhow::Result<()> {
    let clock = SystemClock;
    let state = app::AppState::build(&settings, Arc::new(SystemClock)).await?;
    match cmd {
        UserCommand::Create { name, admin, timezone } => {
            let password = read_password()?;
            let role = if admin { Role::Admin } else { Role::User };
            let user =
                state.accounts.sign_up(&name, password, timezone.as_deref(), role, None, clock.now()).await.map_err(
                    |e| match e {
                        quotask::auth::AuthError::Invalid(errors) => anyhow::anyhow!(
                            "{}",
                            errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
                        ),
                        other => anyhow::anyhow!("{other}"),
                    },
                )?;
            println!("created {} ({}) id {}", user.username, user.role.as_str(), user.id);
        }
        UserCommand::SetLimit { name, limit } => {
            let limit = DailyLimit::parse(limit).map_err(|e| anyhow::anyhow!("limit {}", e.message))?;
            let username = Username::parse(&name).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))?;
            let (user, _) =
                state.store.user_credentials(&username).await?.ok_or_else(|| anyhow::anyhow!("no user {name:?}"))?;
            let changes = AdminChanges { daily_limit: Some(limit.get()), role: None };
            state.store.admin_update_user(None, user.id, changes, clock.now()).await?;
            println!("{}: daily limit {} -> {}", user.username, user.daily_limit, limit.get());
            // The user's open event streams hear of it as after an admin's change through
            // the API, when the servers share events through Redis.
            if settings.redis.is_some() {
                let data = || json!({ "daily_limit": limit.get() });
                if !state.events.publish_and_wait(user.id, Kind::QuotaChanged, data).await {
                    eprintln!("quotask: Redis did not take the quota.changed event; open event streams were not told");
                }
            }
        }
        UserCommand::List => {
            let now = clock.now();
            let mut after = None;
            println!("{:<36}  {:<24}  {:<6}  {:>8}  {:>8}  timezone", "id", "username", "role", "limit", "used");
            loop {
                let page = state.store.list_users(after, 100, now).await?;
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

/// The password from a prompt on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
