//! `info NAME|--all` and `list`.

use std::process::ExitCode;

use kvm_hypervisor::InstanceInfo;

use crate::global::Global;
use crate::output::runtime;

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
    let width = rows
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::len))
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$} {:<18} {:>7} {:>8} {:>5} {:>9}",
        "NAME", "STATE", "PID", "MEMORY", "VCPUS", "AUTOSTART"
    );
    let text = |v: &serde_json::Value, suffix: &str| match v {
        serde_json::Value::Null => "-".to_owned(),
        v => format!(
            "{}{suffix}",
            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
        ),
    };
    for r in &rows {
        let autostart = match &r["autostart"] {
            serde_json::Value::Null if r["defined"] == true => "off".to_owned(),
            serde_json::Value::Null => "-".to_owned(),
            n => format!("on ({n})"),
        };
        println!(
            "{:<width$} {:<18} {:>7} {:>8} {:>5} {:>9}",
            text(&r["name"], ""),
            text(&r["state"], ""),
            text(&r["pid"], ""),
            text(&r["memory_mib"], "M"),
            text(&r["vcpus"], ""),
            autostart
        );
    }
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
        println!(
            "{:<24} {:<18} {:>7} {:>8} {:>5}",
            "NAME", "STATE", "PID", "MEMORY", "VCPUS"
        );
        for i in &infos {
            println!(
                "{:<24} {:<18} {:>7} {:>8} {:>5}",
                i.name,
                state_of(i),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.memory_mib.map_or("-".into(), |m| format!("{m}M")),
                i.vcpus.map_or("-".into(), |v| v.to_string())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let i = &infos[0];
    println!("instance  {}", i.name);
    println!("state     {}", state_of(i));
    if let Some(p) = i.pid {
        println!("pid       {p}");
    }
    if let Some(m) = i.memory_mib {
        println!("memory    {m} MiB");
    }
    if let Some(v) = i.vcpus {
        println!("vcpus     {v}");
    }
    if let Some(u) = i.uptime_secs {
        println!("uptime    {u} s");
    }
    if let Some(v) = &i.qemu_version {
        println!("qemu      {v}");
    }
    if let Some(m) = &i.machine {
        println!("machine   {m}");
    }
    if !i.from_qmp && i.pid.is_some() {
        println!("note      QEMU's monitor did not answer; figures come from its command line");
    }
    for d in &i.devices {
        println!(
            "{:<9} {} {} {}{}",
            d.kind,
            d.uuid,
            d.id.as_deref().unwrap_or("-"),
            d.placement.as_deref().unwrap_or("-"),
            d.tap
                .as_deref()
                .map(|t| format!(" tap {t}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
