//! Output in one place: JSON, the error chain, exit statuses, the runtime.

use std::process::ExitCode;

use serde::Serialize;

/// The exit statuses, as `--help` shows them.
pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  invalid input: a spec, hvparams, or arguments that parse but are wrong
  2  usage error (unknown command or option, missing or malformed argument)
  3  no such instance (not running and no runtime record)
  4  busy or in the wrong state: locked, already running, not running
  5  the operation failed: QEMU, the host, a timeout";

/// Exit status 1: invalid input.
pub(crate) fn invalid() -> ExitCode {
    ExitCode::from(kvm_hypervisor::ErrorKind::InvalidInput.exit_status())
}

/// A table of `header` and `rows`, columns aligned whatever their widths
/// (left, or right for the column indexes in `right`), no borders, no
/// trailing spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row.clone());
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 1));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out: String = t
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// A size in MiB as people read it: `512 MiB`, `1.5 GiB`, `2 TiB`.
pub(crate) fn mib(n: u64) -> String {
    const UNITS: [&str; 3] = ["MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds as people read it: `42 s`, `3 min 5 s`,
/// `2 h 10 min`, `3 d 4 h`.
pub(crate) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Arguments that parse but cannot be right (exit status 1), found by the
/// binary itself rather than the library.
#[derive(Debug)]
pub(crate) struct Invalid(pub(crate) String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Prints `err` as `Error: …` / `caused by: …` lines and returns the exit
/// status of its kind.
pub(crate) fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("Error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("caused by: {cause}");
    }
    if err.downcast_ref::<Invalid>().is_some() {
        return invalid();
    }
    ExitCode::from(kvm_hypervisor::error_kind(err.as_ref()).exit_status())
}

/// A single-threaded tokio runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        let sizes: Vec<String> = [64, 1024, 1536, 10_240, 3 << 20].map(mib).to_vec();
        assert_eq!(sizes, ["64 MiB", "1 GiB", "1.5 GiB", "10 GiB", "3 TiB"]);
        let times: Vec<String> = [42, 185, 7_800, 273_600].map(duration).to_vec();
        assert_eq!(times, ["42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"]);
    }

    #[test]
    fn tables_align_names_of_any_length() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["a-much-longer-name".to_owned(), "100".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "N"], &rows, &[1]),
            "NAME                 N\na                    1\na-much-longer-name 100\n"
        );
    }
}
