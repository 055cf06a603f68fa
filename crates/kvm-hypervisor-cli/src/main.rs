//! The `kvm-hypervisor` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kvm_hypervisor::host;
use kvm_hypervisor::hvparams;
use kvm_hypervisor::spec::{InstanceSpec, SpecError};
use kvm_hypervisor::validate::{Finding, Report, validate_on_host};
use serde_json::json;

/// Manage QEMU/KVM virtual machines on this node (Ganeti-compatible).
#[derive(Parser)]
#[command(name = "kvm-hypervisor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check an instance spec and validate it against this host.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    Validate {
        /// The spec file (.json or .toml).
        spec: PathBuf,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// List every hvparam with its type, default and allowed values.
    Params {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status for an invalid spec.
const INVALID: u8 = 1;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { spec, json } => validate(&spec, json),
        Command::Params { json } => params(json).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

const QEMU_NOT_PROBED: &str =
    "QEMU capabilities (not probed yet: QEMU probing arrives with the command-line planner)";

fn validate(path: &std::path::Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let loaded = match InstanceSpec::load(path) {
        Ok(loaded) => loaded,
        Err(SpecError::Invalid(problems)) => {
            let findings: Vec<Finding> = problems
                .0
                .iter()
                .map(|p| Finding {
                    field: p.field.clone(),
                    message: p.reason.to_string(),
                })
                .collect();
            let report = Report {
                problems: findings,
                warnings: Vec::new(),
                unchecked: Vec::new(),
                generated: Vec::new(),
            };
            print_report(path, None, &report, as_json)?;
            return Ok(ExitCode::from(INVALID));
        }
        Err(e @ SpecError::Syntax { .. }) => {
            if as_json {
                println!(
                    "{}",
                    json!({"spec": path, "valid": false, "error": e.to_string()})
                );
            } else {
                eprintln!("Error: {e}");
            }
            return Ok(ExitCode::from(INVALID));
        }
        Err(e) => return Err(e).context("loading the instance spec"),
    };
    let facts = host::gather(&loaded.spec);
    let mut report = validate_on_host(&loaded.spec, &facts, loaded.generated.clone());
    for f in &mut report.unchecked {
        if f.message == "needs QEMU capabilities" {
            f.message = format!("needs {QEMU_NOT_PROBED}");
        }
    }
    print_report(path, Some(loaded.spec.name().as_str()), &report, as_json)?;
    Ok(if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(INVALID)
    })
}

fn print_report(
    path: &std::path::Path,
    name: Option<&str>,
    report: &Report,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let out = json!({
            "spec": path,
            "name": name,
            "valid": report.is_valid(),
            "problems": report.problems,
            "warnings": report.warnings,
            "unchecked": report.unchecked,
            "generated": report.generated,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let who = name.map_or_else(|| path.display().to_string(), str::to_owned);
    if report.is_valid() {
        println!("{who}: valid on this host");
    } else {
        println!("{who}: {} problem(s)", report.problems.len());
    }
    let section = |title: &str, items: &[Finding]| {
        if !items.is_empty() {
            println!("{title}:");
            for f in items {
                println!("  {}: {}", f.field, f.message);
            }
        }
    };
    section("problems", &report.problems);
    section("warnings", &report.warnings);
    // One line per missing fact, not one per parameter.
    let mut unchecked: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in &report.unchecked {
        match unchecked.iter_mut().find(|(m, _)| *m == f.message) {
            Some((_, fields)) => fields.push(&f.field),
            None => unchecked.push((&f.message, vec![&f.field])),
        }
    }
    if !unchecked.is_empty() {
        println!("not checked:");
        for (message, fields) in unchecked {
            println!("  {}: {message}", fields.join(", "));
        }
    }
    if !report.generated.is_empty() {
        println!("generated (add these to the spec to keep them):");
        for g in &report.generated {
            println!("  {} = {}", g.field, g.value);
        }
    }
    Ok(())
}

fn params(as_json: bool) -> anyhow::Result<()> {
    let defs = hvparams::params();
    if as_json {
        let out: Vec<serde_json::Value> = defs
            .iter()
            .map(|d| {
                json!({
                    "name": d.name(),
                    "type": d.kind(),
                    "default": d.default_value(),
                    "required": d.required(),
                    "allowed": d.allowed(),
                    "scope": d.scope(),
                    "description": d.doc(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let width = defs.iter().map(|d| d.name().len()).max().unwrap_or(0);
    for d in defs {
        let kind = match d.kind() {
            hvparams::Kind::Bool => "bool",
            hvparams::Kind::Int => "int",
            hvparams::Kind::String => "string",
        };
        let allowed = if d.allowed().is_empty() {
            String::new()
        } else {
            format!("  one of: {}", d.allowed().join(", "))
        };
        println!(
            "{:width$}  {kind:6}  default {}{allowed}\n{:width$}  {}",
            d.name(),
            d.default_value(),
            "",
            d.doc(),
        );
    }
    Ok(())
}
