//! Defined instances: specs kept in a config directory, apart from the run
//! directory (which lives in `/run`, RAM), so that they survive a reboot of
//! the node, with their autostart marks.
//!
//! Layout of the config directory (default
//! `/var/lib/kvm-hypervisor/instances` for root, and
//! `$XDG_CONFIG_HOME/kvm-hypervisor/instances` otherwise):
//! - `NAME.json`: the spec, with every value that was generated when it was
//!   defined (instance, disk and NIC UUIDs, MACs) written in, so they never
//!   change;
//! - `NAME.autostart`: present when `node-start` starts the instance; it
//!   holds its order (a number; lower starts first, ties by name).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::spec::{Generated, InstanceSpec, Loaded, SpecError, SpecProblems};
use crate::state::{StateError, check_name, write_atomic};

/// What can go wrong with definitions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefineError {
    /// The spec is invalid.
    #[error("invalid instance spec: {0}")]
    Invalid(SpecProblems),
    /// A definition with this name exists and replacing was not asked for.
    #[error("{0} is defined already (--replace replaces its definition)")]
    Exists(String),
    /// No definition with this name.
    #[error("{0} is not defined")]
    NotDefined(String),
    /// The instance is running.
    #[error("{0} is running; stop it first")]
    Running(String),
    /// A bad name.
    #[error(transparent)]
    State(#[from] StateError),
    /// A spec file that cannot be read.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The config directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl crate::Classify for DefineError {
    fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            DefineError::Invalid(_) | DefineError::Exists(_) => ErrorKind::InvalidInput,
            DefineError::NotDefined(_) => ErrorKind::NoSuchInstance,
            DefineError::Running(_) => ErrorKind::Busy,
            DefineError::State(e) => e.kind(),
            DefineError::Spec(e) => e.kind(),
            DefineError::Io { .. } => ErrorKind::Failed,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DefineError + 'a {
    move |source| DefineError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDir {
    root: PathBuf,
}

/// One definition, as `list --all` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Definition {
    /// The instance's name.
    pub name: String,
    /// Its autostart order, when it autostarts.
    pub autostart: Option<u32>,
}

impl ConfigDir {
    /// `/var/lib/kvm-hypervisor/instances` for root;
    /// `$XDG_CONFIG_HOME/kvm-hypervisor/instances` (or
    /// `~/.config/kvm-hypervisor/instances`) otherwise.
    pub fn default_path() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/kvm-hypervisor/instances");
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(std::env::temp_dir);
        config.join("kvm-hypervisor/instances")
    }

    /// The config directory at `root` (created when something is defined).
    pub fn at(root: impl Into<PathBuf>) -> ConfigDir {
        ConfigDir { root: root.into() }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `name`'s spec is kept.
    pub fn spec_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    fn autostart_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.autostart"))
    }

    /// Whether `name` is defined.
    pub fn is_defined(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.spec_path(name).is_file()
    }

    /// Defines the instance of spec `value` (JSON, as loaded from a JSON
    /// or TOML file): checks it, writes generated values into it, and
    /// stores it. An existing definition of the same name is replaced only
    /// with `replace`. Returns the spec and what was generated.
    pub fn define(&self, value: &Json, replace: bool) -> Result<Loaded, DefineError> {
        let loaded = InstanceSpec::from_value(value).map_err(DefineError::Invalid)?;
        let name = loaded.spec.name().as_str().to_owned();
        check_name(&name)?;
        if !replace && self.is_defined(&name) {
            return Err(DefineError::Exists(name));
        }
        let mut stored = value.clone();
        for g in &loaded.generated {
            set_field(&mut stored, &g.field, Json::String(g.value.clone()));
        }
        self.store(&name, &stored)?;
        Ok(loaded)
    }

    /// Stores `value` (already checked) as `name`'s spec.
    fn store(&self, name: &str, value: &Json) -> Result<(), DefineError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.spec_path(name), text.as_bytes(), 0o600)?;
        Ok(())
    }

    /// `name`'s stored spec.
    pub fn load(&self, name: &str) -> Result<Loaded, DefineError> {
        check_name(name)?;
        let path = self.spec_path(name);
        if !path.is_file() {
            return Err(DefineError::NotDefined(name.to_owned()));
        }
        Ok(InstanceSpec::load(&path)?)
    }

    /// Removes `name`'s definition and autostart mark ([`undefine`] also
    /// makes sure it is not running).
    pub fn remove(&self, name: &str) -> Result<(), DefineError> {
        check_name(name)?;
        let path = self.spec_path(name);
        if !path.is_file() {
            return Err(DefineError::NotDefined(name.to_owned()));
        }
        let mark = self.autostart_path(name);
        if mark.exists() {
            std::fs::remove_file(&mark).map_err(io("removing", &mark))?;
        }
        std::fs::remove_file(&path).map_err(io("removing", &path))
    }

    /// Marks `name` to be started by `node-start` (with its order), or
    /// not (`None`).
    pub fn set_autostart(&self, name: &str, order: Option<u32>) -> Result<(), DefineError> {
        check_name(name)?;
        if !self.spec_path(name).is_file() {
            return Err(DefineError::NotDefined(name.to_owned()));
        }
        let mark = self.autostart_path(name);
        match order {
            Some(n) => write_atomic(&mark, format!("{n}\n").as_bytes(), 0o600)?,
            None if mark.exists() => std::fs::remove_file(&mark).map_err(io("removing", &mark))?,
            None => {}
        }
        Ok(())
    }

    /// Every definition, by name.
    pub fn definitions(&self) -> Result<Vec<Definition>, DefineError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", &self.root)(e)),
        };
        let mut out: Vec<Definition> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name();
                let name = file.to_str()?.strip_suffix(".json")?;
                check_name(name).ok()?;
                Some(Definition {
                    name: name.to_owned(),
                    autostart: self.autostart_order(name),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn autostart_order(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.autostart_path(name)).ok()?;
        // A mark whose order cannot be read still autostarts, first.
        Some(text.trim().parse().unwrap_or(0))
    }

    /// The instances `node-start` starts, in order: by their order, then
    /// by name.
    pub fn autostart(&self) -> Result<Vec<String>, DefineError> {
        let mut marked: Vec<(u32, String)> = self
            .definitions()?
            .into_iter()
            .filter_map(|d| Some((d.autostart?, d.name)))
            .collect();
        marked.sort();
        Ok(marked.into_iter().map(|(_, name)| name).collect())
    }
}

/// What became of one instance in [`node_start`] or [`node_stop`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeOutcome {
    /// The instance.
    pub name: String,
    /// `started (pid N)`, `running`, `powered off`, …, or `failed`.
    pub result: String,
    /// Why it failed, with its causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeOutcome {
    /// `result`, or `failed` with the error's chain.
    fn of(name: String, result: Result<String, String>) -> NodeOutcome {
        match result {
            Ok(result) => NodeOutcome {
                name,
                result,
                error: None,
            },
            Err(e) => NodeOutcome {
                name,
                result: "failed".into(),
                error: Some(e),
            },
        }
    }
}

/// Starts every autostart instance of `config` that is not running on
/// `node`, in their order, `parallel` at a time (at boot). One that fails
/// is reported; the others go on.
pub async fn node_start(
    node: &crate::Node,
    config: &ConfigDir,
    parallel: usize,
) -> Result<Vec<NodeOutcome>, DefineError> {
    use futures_util::StreamExt;
    let one = |name: String| async move {
        if crate::state::liveness(&node.run, &name).is_running() {
            return NodeOutcome::of(name, Ok("running".into()));
        }
        let started = match config.load(&name) {
            Ok(loaded) => crate::start(node, &loaded.spec, crate::StartOptions::default())
                .await
                .map(|s| format!("started (pid {})", s.pid))
                .map_err(|e| crate::error_chain(&e)),
            Err(e) => Err(crate::error_chain(&e)),
        };
        NodeOutcome::of(name, started)
    };
    Ok(futures_util::stream::iter(config.autostart()?)
        .map(one)
        .buffered(parallel.max(1))
        .collect()
        .await)
}

/// Stops every running instance of `node` at once, with one deadline for
/// all, `timeout` (then SIGTERM, then SIGKILL, as a stop does), as
/// `libvirt-guests` does at host shutdown.
pub async fn node_stop(
    node: &crate::Node,
    timeout: std::time::Duration,
) -> Result<Vec<NodeOutcome>, StateError> {
    use futures_util::StreamExt;
    let running: Vec<String> = crate::list(node)?
        .into_iter()
        .filter(|n| crate::state::liveness(&node.run, n).is_running())
        .collect();
    let opts = crate::StopOptions {
        timeout,
        force: false,
    };
    Ok(futures_util::stream::iter(running)
        .map(|name| async move {
            let ended = crate::stop(node, &name, opts).await;
            let ended = ended
                .map(|e| e.describe().to_owned())
                .map_err(|e| crate::error_chain(&e));
            NodeOutcome::of(name, ended)
        })
        .buffer_unordered(usize::MAX)
        .collect()
        .await)
}

/// Forgets defined instance `name` of `config`, and the console log its
/// last stop kept on `node`; refused while it runs. (A start racing this
/// still runs, as a one-shot instance.)
pub fn undefine(node: &crate::Node, config: &ConfigDir, name: &str) -> Result<(), DefineError> {
    check_name(name)?;
    if crate::state::liveness(&node.run, name).is_running() {
        return Err(DefineError::Running(name.to_owned()));
    }
    config.remove(name)?;
    let log = node.run.console_log(name);
    match std::fs::remove_file(&log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &log)(e)),
        _ => Ok(()),
    }
}

/// Sets `field` (`uuid`, `nics[0].mac`, …, as [`Generated`] names it) in
/// `value`, creating objects on the way.
fn set_field(value: &mut Json, field: &str, new: Json) {
    let mut at = value;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Json::Object(map) = at else { return };
        at = map.entry(key.to_owned()).or_insert(Json::Null);
        if let Some(i) = index {
            match at {
                Json::Array(items) if i < items.len() => at = &mut items[i],
                _ => return,
            }
        }
    }
    *at = new;
}

/// The values `define` wrote into a spec, for messages.
pub fn describe_generated(generated: &[Generated]) -> Vec<String> {
    generated
        .iter()
        .map(|g| format!("{} = {}", g.field, g.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_values_are_written_where_they_were_missing() {
        let mut spec =
            json!({"name": "a", "nics": [{"mode": "bridged"}, {"mac": "aa:00:00:00:00:01"}]});
        set_field(&mut spec, "uuid", json!("u1"));
        set_field(&mut spec, "nics[0].mac", json!("aa:00:00:00:00:02"));
        set_field(&mut spec, "nics[1].uuid", json!("u2"));
        set_field(&mut spec, "nics[5].uuid", json!("ignored"));
        assert_eq!(
            spec,
            json!({"name": "a", "uuid": "u1", "nics": [
                {"mode": "bridged", "mac": "aa:00:00:00:00:02"},
                {"mac": "aa:00:00:00:00:01", "uuid": "u2"}]})
        );
    }
}
