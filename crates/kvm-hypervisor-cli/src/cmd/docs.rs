//! `completions SHELL` and `man-pages --out-dir DIR`: generated from the
//! same clap definitions that parse the arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
    /// Accepted for uniformity; the script is not JSON.
    #[arg(long)]
    json: bool,
}

impl CompletionsArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let mut cmd = crate::Cli::command();
        clap_complete::generate(
            self.shell,
            &mut cmd,
            "kvm-hypervisor",
            &mut std::io::stdout(),
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct SchemaArgs {
    /// Accepted for uniformity; the schema is JSON.
    #[arg(long)]
    json: bool,
}

impl SchemaArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        crate::output::print_json(&kvm_hypervisor::spec::spec_schema())?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct ManPagesArgs {
    /// Where to write `kvm-hypervisor.1` and `kvm-hypervisor-COMMAND.1`.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Print the written files as JSON.
    #[arg(long)]
    json: bool,
}

impl ManPagesArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        std::fs::create_dir_all(&self.out_dir)
            .with_context(|| format!("creating {}", self.out_dir.display()))?;
        let cmd = crate::Cli::command();
        let mut written = Vec::new();
        let mut write = |name: String, cmd: clap::Command| -> anyhow::Result<()> {
            let path = self.out_dir.join(format!("{name}.1"));
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
            Ok(())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("kvm-hypervisor-{}", sub.get_name());
            write(
                name.clone(),
                sub.clone()
                    .display_name(name)
                    .bin_name(format!("kvm-hypervisor {}", sub.get_name())),
            )?;
        }
        write("kvm-hypervisor".into(), cmd)?;
        if self.json {
            crate::output::print_json(&written)?;
        } else {
            for p in &written {
                println!("{}", p.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
