//! `params`: every hvparam.

use std::process::ExitCode;

use kvm_hypervisor::hvparams;
use serde_json::json;

use super::Json;
use crate::global::Global;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    out: Json,
}

impl Args {
    pub(crate) fn run(self, _: &Global) -> anyhow::Result<ExitCode> {
        params(self.out.json)?;
        Ok(ExitCode::SUCCESS)
    }
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
                    "ganeti": d.is_ganeti(),
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
