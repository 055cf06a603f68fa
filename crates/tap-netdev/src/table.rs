//! Routing table names: numbers, iproute2's built-in names, and the names
//! in iproute2's `rt_tables` files.

use std::path::{Path, PathBuf};

use crate::error::TapError;

/// The main routing table, where routes go when a routed NIC names no table.
pub const MAIN_TABLE: u32 = 254;

/// The files iproute2 reads table names from, in order (a `.d` directory
/// stands for its `*.conf` files).
const TABLE_FILES: &[&str] = &[
    "/etc/iproute2/rt_tables",
    "/etc/iproute2/rt_tables.d",
    "/usr/share/iproute2/rt_tables",
    "/usr/share/iproute2/rt_tables.d",
];

/// iproute2's names that need no file.
const BUILTIN: &[(&str, u32)] = &[
    ("unspec", 0),
    ("default", 253),
    ("main", 254),
    ("local", 255),
];

/// The routing table a routed NIC's `link` names: empty is the main table,
/// a number is itself, a name is looked up among iproute2's built-in names
/// and in `/etc/iproute2/rt_tables` (and `rt_tables.d/*.conf`, and the same
/// under `/usr/share/iproute2`).
pub fn routing_table(link: &str) -> Result<u32, TapError> {
    let mut files = Vec::new();
    for path in TABLE_FILES.iter().map(Path::new) {
        if path.is_dir() {
            let mut confs: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            confs.sort();
            files.extend(confs);
        } else {
            files.push(path.to_path_buf());
        }
    }
    let contents: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)))
        .collect();
    lookup(link, &contents)
}

/// [`routing_table`] over given file contents.
fn lookup(link: &str, files: &[(PathBuf, String)]) -> Result<u32, TapError> {
    if link.is_empty() {
        return Ok(MAIN_TABLE);
    }
    if let Some(id) = parse_id(link) {
        return Ok(id);
    }
    let from_files = files
        .iter()
        .flat_map(|(_, text)| parse(text))
        .find(|(_, name)| *name == link)
        .map(|(id, _)| id);
    let builtin = BUILTIN.iter().find(|(n, _)| *n == link).map(|&(_, id)| id);
    from_files
        .or(builtin)
        .ok_or_else(|| TapError::UnknownTable {
            link: link.to_owned(),
            searched: files.iter().map(|(p, _)| p.clone()).collect(),
        })
}

/// `(id, name)` pairs of an `rt_tables` file: `id name` per line, `#`
/// comments.
fn parse(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let id = parse_id(words.next()?)?;
        Some((id, words.next()?))
    })
}

/// A table number, decimal or `0x` hexadecimal as iproute2 reads it.
fn parse_id(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RT_TABLES: &str = "\
#
# reserved values
#
255\tlocal
254\tmain
253\tdefault
0\tunspec
#
# local
#
100 gnt_routed   # instances
0x200 hexed
";

    fn files() -> Vec<(PathBuf, String)> {
        vec![(
            PathBuf::from("/etc/iproute2/rt_tables"),
            RT_TABLES.to_owned(),
        )]
    }

    #[test]
    fn empty_link_is_the_main_table() {
        assert_eq!(lookup("", &files()).unwrap(), 254);
    }

    #[test]
    fn a_number_is_the_table_id() {
        assert_eq!(lookup("100", &[]).unwrap(), 100);
        assert_eq!(lookup("4000000000", &[]).unwrap(), 4_000_000_000);
    }

    #[test]
    fn a_name_from_the_file_is_resolved() {
        assert_eq!(lookup("gnt_routed", &files()).unwrap(), 100);
        assert_eq!(lookup("hexed", &files()).unwrap(), 0x200);
    }

    #[test]
    fn builtin_names_need_no_file() {
        assert_eq!(lookup("main", &[]).unwrap(), 254);
        assert_eq!(lookup("local", &[]).unwrap(), 255);
    }

    #[test]
    fn an_unknown_name_names_the_files_searched() {
        let err = lookup("nosuch", &files()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "routing table `nosuch` is neither a number nor a name in /etc/iproute2/rt_tables"
        );
        assert!(matches!(err, TapError::UnknownTable { link, .. } if link == "nosuch"));
    }

    #[test]
    fn a_number_out_of_range_is_not_a_table() {
        assert!(matches!(
            lookup("4294967296", &[]),
            Err(TapError::UnknownTable { .. })
        ));
    }

    #[test]
    fn this_hosts_main_table_resolves() {
        assert_eq!(routing_table("main").unwrap(), 254);
    }
}
