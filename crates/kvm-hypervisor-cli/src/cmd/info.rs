//! `info NAME|--all` and `list`.

use std::process::ExitCode;

use kvm_hypervisor::InstanceInfo;

use crate::global::Global;
use crate::output::{duration, mib, runtime, table};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    #[arg(required_unless_present = "all")]
    name: Option<String>,
    /// Every instance the run directory knows.
    #[arg(long, conflicts_with = "name")]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        info(self.name, self.all, g, self.json)
    }
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// Defined instances that are stopped too, and every definition's
    /// autostart order.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl ListArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        if self.all {
            list_all(g, self.json)
        } else {
            info(None, true, g, self.json)
        }
    }
}

/// `list --all`: the run directory's instances and the definitions.
fn list_all(g: &Global, as_json: bool) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let infos = runtime()?.block_on(kvm_hypervisor::info_all(&node))?;
    let definitions = g.config_dir().definitions()?;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for i in &infos {
        let d = definitions.iter().find(|d| d.name == i.name);
        let mut v = serde_json::to_value(i)?;
        v["defined"] = d.is_some().into();
        v["autostart"] = serde_json::to_value(d.and_then(|d| d.autostart))?;
        rows.push(v);
    }
    for d in &definitions {
        if !infos.iter().any(|i| i.name == d.name) {
            rows.push(serde_json::json!({
                "name": d.name, "state": "stopped", "defined": true, "autostart": d.autostart,
            }));
        }
    }
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        v => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let autostart = match &r["autostart"] {
                serde_json::Value::Null if r["defined"] == true => "off".to_owned(),
                serde_json::Value::Null => "-".to_owned(),
                n => format!("on ({n})"),
            };
            vec![
                text(&r["name"]),
                text(&r["state"]),
                text(&r["pid"]),
                r["memory_mib"].as_u64().map_or("-".into(), mib),
                text(&r["vcpus"]),
                autostart,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "STATE", "PID", "MEMORY", "VCPUS", "AUTOSTART"],
            &cells,
            &[2, 3, 4]
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn info(name: Option<String>, all: bool, g: &Global, as_json: bool) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let rt = runtime()?;
    let infos = match (all, name) {
        (true, _) | (false, None) => rt.block_on(kvm_hypervisor::info_all(&node))?,
        (false, Some(n)) => vec![rt.block_on(kvm_hypervisor::info(&node, &n))?],
    };
    if as_json {
        let v = if all {
            serde_json::to_value(&infos)?
        } else {
            serde_json::to_value(&infos[0])?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let state_of = |i: &InstanceInfo| {
        serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    if all {
        let rows: Vec<Vec<String>> = infos
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    state_of(i),
                    i.pid.map_or("-".into(), |p| p.to_string()),
                    i.memory_mib.map_or("-".into(), mib),
                    i.vcpus.map_or("-".into(), |v| v.to_string()),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["NAME", "STATE", "PID", "MEMORY", "VCPUS"],
                &rows,
                &[2, 3, 4]
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe(&infos[0], &state_of(&infos[0])));
    Ok(ExitCode::SUCCESS)
}

/// `info NAME` as text: the instance, then its disks and NICs as tables.
fn describe(i: &InstanceInfo, state: &str) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    line("instance", i.name.clone());
    if let Some(u) = &i.uuid {
        line("uuid", u.clone());
    }
    line("state", state.to_owned());
    if let Some(p) = i.pid {
        line("pid", p.to_string());
    }
    match (i.memory_mib, i.memory_max_mib) {
        (Some(now), Some(max)) if now != max => line(
            "memory",
            format!("{} (of {}, ballooned)", mib(now), mib(max)),
        ),
        (Some(m), _) | (None, Some(m)) => line("memory", mib(m)),
        (None, None) => {}
    }
    if let Some(v) = i.vcpus {
        line("vcpus", v.to_string());
    }
    if let Some(u) = i.uptime_secs {
        line("uptime", duration(u));
    }
    if let Some(v) = &i.qemu_version {
        line("qemu", v.clone());
    }
    if let Some(m) = &i.machine {
        line("machine", m.clone());
    }
    if let Some(c) = &i.cgroup {
        let mut used = String::new();
        if let Some(u) = &i.usage {
            used = format!(" (cpu {:.1} s", u.cpu_usec as f64 / 1e6);
            if let Some(m) = u.memory_bytes {
                used.push_str(&format!(", memory {}", mib(m >> 20)));
            }
            used.push(')');
        }
        line("cgroup", format!("{}{used}", c.display()));
    }
    if !i.from_qmp && i.pid.is_some() {
        line(
            "note",
            "QEMU's monitor did not answer; figures come from its command line".into(),
        );
    }
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let disks: Vec<Vec<String>> = i
        .devices
        .iter()
        .filter(|d| d.kind == "disk")
        .enumerate()
        .map(|(n, d)| {
            vec![
                n.to_string(),
                or(&d.name),
                d.uuid.clone(),
                d.size_mib.map_or("-".into(), mib),
                or(&d.placement),
                or(&d.source),
            ]
        })
        .collect();
    if !disks.is_empty() {
        out.push_str("\ndisks\n");
        out.push_str(&table(
            &["#", "NAME", "UUID", "SIZE", "ADDRESS", "SOURCE"],
            &disks,
            &[0, 3],
        ));
    }
    let nics: Vec<Vec<String>> = i
        .devices
        .iter()
        .filter(|d| d.kind == "nic")
        .enumerate()
        .map(|(n, d)| {
            vec![
                n.to_string(),
                or(&d.name),
                d.uuid.clone(),
                or(&d.mac),
                or(&d.mode),
                or(&d.link),
                or(&d.tap),
                or(&d.ip),
                or(&d.placement),
            ]
        })
        .collect();
    if !nics.is_empty() {
        out.push_str("\nnics\n");
        out.push_str(&table(
            &[
                "#", "NAME", "UUID", "MAC", "MODE", "LINK", "TAP", "IP", "ADDRESS",
            ],
            &nics,
            &[0],
        ));
    }
    out
}
