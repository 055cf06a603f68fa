//! Defined instances: `define`, `undefine`, `edit`, `autostart`,
//! `node-start`, `node-stop`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kvm_hypervisor::defined::{self, ConfigDir, DefineError, NodeOutcome, describe_generated};
use kvm_hypervisor::spec::InstanceSpec;
use serde_json::json;

use crate::global::Global;
use crate::output::{invalid, print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct DefineArgs {
    /// The spec file (.json or .toml).
    spec: PathBuf,
    /// Replace an existing definition of the same name.
    #[arg(long)]
    replace: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl DefineArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let config = g.config_dir();
        let value = InstanceSpec::load_value(&self.spec).context("loading the instance spec")?;
        let loaded = match config.define(&value, self.replace) {
            Err(DefineError::Invalid(problems)) => {
                eprintln!(
                    "Error: {}: invalid instance spec: {problems}",
                    self.spec.display()
                );
                return Ok(invalid());
            }
            other => other?,
        };
        let name = loaded.spec.name().as_str();
        let generated = describe_generated(&loaded.generated);
        let path = config.spec_path(name);
        // Defined all the same (a bridge or disk may come later), but said
        // now rather than at the first start.
        let report = runtime()?.block_on(kvm_hypervisor::validate::validate_spec(
            &loaded,
            &kvm_hypervisor::caps::default_cache_dir(),
        ));
        let host: Vec<String> = report
            .problems
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect();
        if self.json {
            print_json(&json!({
                "name": name, "path": path, "generated": generated, "host_problems": host,
            }))?;
        } else {
            println!("{name}: defined in {}", path.display());
            for g in generated {
                println!("  generated {g} (kept in the definition)");
            }
            for h in &host {
                eprintln!("warning: {name} cannot start on this host yet: {h}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct NameArgs {
    /// The instance.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl NameArgs {
    /// `undefine NAME`: refused while it runs.
    pub(crate) fn undefine(self, g: &Global) -> anyhow::Result<ExitCode> {
        defined::undefine(&g.node(None)?, &g.config_dir(), &self.name)?;
        if self.json {
            print_json(&json!({"name": self.name, "defined": false}))?;
        } else {
            println!("{}: undefined", self.name);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `edit NAME`: the definition in `$VISUAL`/`$EDITOR` (else `vi`),
    /// checked before it is saved; a rejected edit is kept aside.
    pub(crate) fn edit(self, g: &Global) -> anyhow::Result<ExitCode> {
        let config = g.config_dir();
        config.load(&self.name)?;
        let original = config.spec_path(&self.name);
        let draft = std::env::temp_dir().join(format!(
            "kvm-hypervisor-edit-{}-{}.json",
            self.name,
            std::process::id()
        ));
        std::fs::copy(&original, &draft)
            .with_context(|| format!("copying {}", original.display()))?;
        let editor = std::env::var("VISUAL")
            .or_else(|_| std::env::var("EDITOR"))
            .unwrap_or_else(|_| "vi".to_owned());
        let status = kvm_hypervisor::process::run_interactive(&editor, draft.as_os_str())
            .with_context(|| format!("running the editor `{editor}`"))?;
        if !status.success() {
            let _ = std::fs::remove_file(&draft);
            anyhow::bail!("the editor `{editor}` failed ({status}); nothing changed");
        }
        let result = edited(&config, &self.name, &draft);
        match result {
            Ok(changed) => {
                let _ = std::fs::remove_file(&draft);
                if self.json {
                    print_json(&json!({"name": self.name, "changed": changed}))?;
                } else if changed {
                    println!("{}: definition saved", self.name);
                } else {
                    println!("{}: unchanged", self.name);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!(
                    "Error: {}: {why}\nnothing changed; the edit is kept in {}",
                    self.name,
                    draft.display()
                );
                Ok(invalid())
            }
        }
    }
}

/// Checks the edited `draft` of `name`'s definition and saves it; whether
/// it changed, or why it was refused.
fn edited(config: &ConfigDir, name: &str, draft: &Path) -> Result<bool, String> {
    let before = std::fs::read_to_string(config.spec_path(name)).unwrap_or_default();
    let after = std::fs::read_to_string(draft).map_err(|e| e.to_string())?;
    if before == after {
        return Ok(false);
    }
    let value: serde_json::Value = serde_json::from_str(&after).map_err(|e| e.to_string())?;
    let new_name = value
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    if new_name != name {
        return Err(format!(
            "the name cannot change in an edit (`{new_name}`); define it anew instead"
        ));
    }
    match config.define(&value, true) {
        Ok(_) => Ok(true),
        Err(DefineError::Invalid(problems)) => Err(format!("invalid instance spec: {problems}")),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::Args)]
pub(crate) struct AutostartArgs {
    /// The instance (defined).
    name: String,
    /// `on` or `off`.
    #[arg(value_parser = ["on", "off"])]
    state: String,
    /// With `on`: the order `node-start` starts it in (lower first; ties
    /// by name).
    #[arg(long, default_value_t = 0)]
    order: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl AutostartArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let on = self.state == "on";
        g.config_dir()
            .set_autostart(&self.name, on.then_some(self.order))?;
        if self.json {
            print_json(&json!({"name": self.name, "autostart": on.then_some(self.order)}))?;
        } else if on {
            println!("{}: autostart on (order {})", self.name, self.order);
        } else {
            println!("{}: autostart off", self.name);
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct NodeStartArgs {
    /// How many instances start at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    parallel: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl NodeStartArgs {
    /// Starts every autostart instance that is not running, in their
    /// order, `--parallel` at a time. Exit 5 when one failed.
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let parallel = usize::try_from(self.parallel).unwrap_or(1);
        let outcomes =
            runtime()?.block_on(defined::node_start(&node, &g.config_dir(), parallel))?;
        report(&outcomes, self.json)
    }
}

#[derive(clap::Args)]
pub(crate) struct NodeStopArgs {
    /// Seconds every guest gets to power off, all at once (then SIGTERM,
    /// then SIGKILL, as `stop` does).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl NodeStopArgs {
    /// Stops every running instance of the run directory at once, with one
    /// deadline for all, as `libvirt-guests` does at host shutdown.
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let timeout = Duration::from_secs(self.timeout);
        let outcomes = runtime()?.block_on(defined::node_stop(&node, timeout))?;
        report(&outcomes, self.json)
    }
}

fn report(outcomes: &[NodeOutcome], as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        print_json(&outcomes)?;
    } else {
        for o in outcomes {
            match &o.error {
                Some(e) => println!("{}: failed: {e}", o.name),
                None => println!("{}: {}", o.name, o.result),
            }
        }
    }
    Ok(if outcomes.iter().any(|o| o.error.is_some()) {
        ExitCode::from(kvm_hypervisor::ErrorKind::Failed.exit_status())
    } else {
        ExitCode::SUCCESS
    })
}
