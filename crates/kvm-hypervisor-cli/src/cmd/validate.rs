//! `validate SPEC`: the spec and its hvparams, on this host and its QEMU.
//! `validate --hvparams FILE`: a map of hvparams alone (what a cluster
//! manager checks before it stores them).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use kvm_hypervisor::caps;
use kvm_hypervisor::spec::{InstanceSpec, SpecError};
use kvm_hypervisor::validate::{
    Depth, Finding, Report, partial_report, validate_hvparams, validate_spec,
};
use serde_json::json;

use crate::global::Global;
use crate::output::{invalid, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The spec file (.json or .toml).
    #[arg(required_unless_present = "hvparams")]
    spec: Option<PathBuf>,
    /// Check a JSON object of hvparams instead of a spec (`-`: standard
    /// input): every value, and this host and the QEMU of `kvm_path`.
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    hvparams: Option<PathBuf>,
    /// With --hvparams: the values alone, not the host.
    #[arg(long, conflicts_with = "spec")]
    syntax_only: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, _: &Global) -> anyhow::Result<ExitCode> {
        let path = match (&self.spec, &self.hvparams) {
            (Some(spec), _) => spec.as_path(),
            (None, Some(hvparams)) => return self.run_hvparams(hvparams),
            (None, None) => anyhow::bail!("a spec or --hvparams is needed"),
        };
        let loaded = match InstanceSpec::load_value(path) {
            Ok(value) => match InstanceSpec::from_value(&value) {
                Ok(loaded) => loaded,
                Err(problems) => {
                    print_report(path, None, &partial_report(&value, &problems), self.json)?;
                    return Ok(invalid());
                }
            },
            Err(e @ SpecError::Syntax { .. }) => {
                if self.json {
                    println!(
                        "{}",
                        json!({"spec": path, "valid": false, "error": e.to_string()})
                    );
                } else {
                    eprintln!("Error: {e}");
                }
                return Ok(invalid());
            }
            Err(e) => return Err(e).context("loading the instance spec"),
        };
        let report = runtime()?.block_on(validate_spec(&loaded, &caps::default_cache_dir()));
        print_report(path, Some(loaded.spec.name().as_str()), &report, self.json)?;
        Ok(if report.is_valid() {
            ExitCode::SUCCESS
        } else {
            invalid()
        })
    }
}

impl Args {
    fn run_hvparams(&self, file: &Path) -> anyhow::Result<ExitCode> {
        let text = if file == Path::new("-") {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        }
        .map_err(|e| invalid_input(file, &e.to_string()))?;
        let map = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(invalid_input(file, "not a JSON object")),
            Err(e) => return Err(invalid_input(file, &e.to_string())),
        };
        let depth = if self.syntax_only {
            Depth::Syntax
        } else {
            Depth::Host
        };
        let report =
            runtime()?.block_on(validate_hvparams(&map, depth, &caps::default_cache_dir()));
        print_report(file, Some("hvparams"), &report, self.json)?;
        Ok(if report.is_valid() {
            ExitCode::SUCCESS
        } else {
            invalid()
        })
    }
}

fn invalid_input(file: &Path, why: &str) -> anyhow::Error {
    crate::output::Invalid(format!("{}: {why}", file.display())).into()
}

fn print_report(
    path: &Path,
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
        let scope = if report.host_checked {
            "on this host"
        } else {
            "(values only; the host was not looked at)"
        };
        println!("{who}: valid {scope}");
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
