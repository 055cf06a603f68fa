//! `qmp`: one QMP command, or events.

use std::path::PathBuf;
use std::process::ExitCode;

use kvm_hypervisor::state;
use serde_json::json;

use crate::global::Global;
use crate::output::{Invalid, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The QMP socket.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "instance",
        conflicts_with = "instance"
    )]
    socket: Option<PathBuf>,
    /// An instance of the run directory (its users' monitor,
    /// `ctrl/NAME.qmp-user`; the control monitor stays free for lifecycle
    /// commands).
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// The command, e.g. `query-status`.
    #[arg(required_unless_present = "events")]
    command: Option<String>,
    /// Its arguments as a JSON object.
    #[arg(value_name = "JSON-ARGS")]
    arguments: Option<String>,
    /// Print events as they arrive for this many seconds (after the command, if any).
    #[arg(long, value_name = "SECONDS")]
    events: Option<u64>,
    /// With --events: stop at the first event of this name.
    #[arg(long, value_name = "EVENT", requires = "events")]
    until: Option<String>,
    /// Print JSON (QMP's replies and events are JSON already; accepted for
    /// uniformity).
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        qmp_command(self, g)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn qmp_command(a: Args, g: &Global) -> anyhow::Result<()> {
    let Args {
        socket,
        instance,
        command,
        arguments,
        events,
        until,
        json: _,
    } = a;
    let path = match (socket, instance) {
        (Some(p), _) => p,
        (None, Some(name)) => {
            state::check_name(&name)?;
            g.run_dir().socket(&name, state::Socket::UserQmp)
        }
        (None, None) => anyhow::bail!("give --socket or --instance"),
    };
    let args: serde_json::Value = match &arguments {
        Some(text) => {
            // Never echo the text: it may hold a password (set_password).
            serde_json::from_str(text)
                .map_err(|e| Invalid(format!("JSON-ARGS is not JSON ({e})")))?
        }
        None => serde_json::Value::Null,
    };
    if !(args.is_null() || args.is_object()) {
        return Err(Invalid("JSON-ARGS must be a JSON object".into()).into());
    }
    runtime()?.block_on(async {
        let qmp = kvm_hypervisor::qmp::Client::connect(&path).await?;
        let listener = events.map(|_| qmp.events());
        if let Some(name) = &command {
            let reply = qmp.execute_raw(name.clone(), args).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        if let (Some(secs), Some(mut listener)) = (events, listener) {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
            while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, listener.next()).await {
                let line = json!({
                    "event": event.name,
                    "data": event.data,
                    "timestamp": {"seconds": event.timestamp.seconds, "microseconds": event.timestamp.microseconds},
                });
                println!("{line}");
                if until.as_deref() == Some(event.name.as_str()) {
                    break;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })
}
