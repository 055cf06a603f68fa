//! Ganeti's CPU mask syntax: `all`, or CPU ids and ranges separated by `,`;
//! a multi-mask has one such mask per vCPU, separated by `:`.
//!
//! Differences from Ganeti's `ParseMultiCpuMask`, on purpose: an empty entry
//! (`0::1`, `0,,1`) is refused instead of becoming a mask that pins to no CPU,
//! and CPU ids are bounded so a typo cannot allocate a huge set.

use std::collections::BTreeSet;
use std::fmt;

/// The largest CPU id accepted (Linux's `NR_CPUS` maximum is 8192).
pub const MAX_CPU_ID: u32 = 8191;

/// The CPUs one thread may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSet {
    /// Any CPU (`all`).
    All,
    /// Exactly these CPUs.
    Cpus(BTreeSet<u32>),
}

impl CpuSet {
    /// The highest CPU id named, if any.
    pub fn max_cpu(&self) -> Option<u32> {
        match self {
            CpuSet::All => None,
            CpuSet::Cpus(set) => set.last().copied(),
        }
    }
}

/// A parsed `cpu_mask` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuMask {
    /// One mask for every thread of the VM.
    Single(CpuSet),
    /// One mask per vCPU, in vCPU order.
    PerVcpu(Vec<CpuSet>),
}

impl CpuMask {
    /// Parses Ganeti's (multi-)CPU mask syntax, e.g. `0-2,4:all:1,3`.
    pub fn parse(mask: &str) -> Result<CpuMask, CpuMaskError> {
        let mut sets = mask
            .split(':')
            .map(parse_set)
            .collect::<Result<Vec<_>, _>>()?;
        if sets.len() == 1 {
            Ok(CpuMask::Single(sets.remove(0)))
        } else {
            Ok(CpuMask::PerVcpu(sets))
        }
    }

    /// The highest CPU id named anywhere in the mask.
    pub fn max_cpu(&self) -> Option<u32> {
        match self {
            CpuMask::Single(set) => set.max_cpu(),
            CpuMask::PerVcpu(sets) => sets.iter().filter_map(CpuSet::max_cpu).max(),
        }
    }
}

fn parse_set(entry: &str) -> Result<CpuSet, CpuMaskError> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err(CpuMaskError::EmptyEntry);
    }
    if entry == "all" {
        return Ok(CpuSet::All);
    }
    let mut cpus = BTreeSet::new();
    for range in entry.split(',') {
        let range = range.trim();
        if range.is_empty() {
            return Err(CpuMaskError::EmptyEntry);
        }
        let (lo, hi) = match range.split_once('-') {
            None => {
                let id = parse_id(range)?;
                (id, id)
            }
            Some((lo, hi)) => {
                if hi.contains('-') {
                    return Err(CpuMaskError::BadRange(range.to_owned()));
                }
                let (lo, hi) = (parse_id(lo)?, parse_id(hi)?);
                if lo > hi {
                    return Err(CpuMaskError::DescendingRange(range.to_owned()));
                }
                (lo, hi)
            }
        };
        cpus.extend(lo..=hi);
    }
    Ok(CpuSet::Cpus(cpus))
}

fn parse_id(s: &str) -> Result<u32, CpuMaskError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuMaskError::NotACpuId(s.to_owned()));
    }
    match s.parse::<u32>() {
        Ok(id) if id <= MAX_CPU_ID => Ok(id),
        _ => Err(CpuMaskError::CpuIdTooLarge(s.to_owned())),
    }
}

/// Why a CPU mask is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuMaskError {
    /// `0::1`, `0,,1` or an empty mask.
    #[error("empty entry")]
    EmptyEntry,
    /// Neither a number nor `all`.
    #[error("`{0}` is not a CPU id")]
    NotACpuId(String),
    /// A CPU id above [`MAX_CPU_ID`].
    #[error("CPU id {0} is above {MAX_CPU_ID}")]
    CpuIdTooLarge(String),
    /// `1-2-3`.
    #[error("`{0}` has more than one `-`")]
    BadRange(String),
    /// `4-2`.
    #[error("range `{0}` is descending")]
    DescendingRange(String),
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuSet::All => f.write_str("all"),
            CpuSet::Cpus(cpus) => {
                let ids: Vec<String> = cpus.iter().map(u32::to_string).collect();
                f.write_str(&ids.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(ids: &[u32]) -> CpuSet {
        CpuSet::Cpus(ids.iter().copied().collect())
    }

    #[test]
    fn all_is_a_single_unrestricted_mask() {
        assert_eq!(CpuMask::parse("all"), Ok(CpuMask::Single(CpuSet::All)));
    }

    #[test]
    fn ranges_and_ids_combine() {
        assert_eq!(
            CpuMask::parse("0-2,4"),
            Ok(CpuMask::Single(cpus(&[0, 1, 2, 4])))
        );
    }

    #[test]
    fn multi_mask_has_one_entry_per_vcpu() {
        assert_eq!(
            CpuMask::parse("0-2,4:all:1,3"),
            Ok(CpuMask::PerVcpu(vec![
                cpus(&[0, 1, 2, 4]),
                CpuSet::All,
                cpus(&[1, 3])
            ]))
        );
    }

    #[test]
    fn empty_vcpu_entry_is_refused() {
        assert_eq!(CpuMask::parse("0::1"), Err(CpuMaskError::EmptyEntry));
    }

    #[test]
    fn empty_mask_is_refused() {
        assert_eq!(CpuMask::parse(""), Err(CpuMaskError::EmptyEntry));
    }

    #[test]
    fn descending_range_is_refused() {
        assert_eq!(
            CpuMask::parse("4-2"),
            Err(CpuMaskError::DescendingRange("4-2".into()))
        );
    }

    #[test]
    fn double_hyphen_is_refused() {
        assert_eq!(
            CpuMask::parse("1-2-3"),
            Err(CpuMaskError::BadRange("1-2-3".into()))
        );
    }

    #[test]
    fn negative_id_is_refused() {
        assert_eq!(
            CpuMask::parse("-1"),
            Err(CpuMaskError::NotACpuId("".into()))
        );
    }

    #[test]
    fn all_inside_a_list_is_refused() {
        assert_eq!(
            CpuMask::parse("0,all"),
            Err(CpuMaskError::NotACpuId("all".into()))
        );
    }

    #[test]
    fn huge_id_is_refused() {
        assert_eq!(
            CpuMask::parse("0-4000000000"),
            Err(CpuMaskError::CpuIdTooLarge("4000000000".into()))
        );
    }

    #[test]
    fn max_cpu_spans_every_vcpu() {
        assert_eq!(
            CpuMask::parse("1:7,2:all").map(|m| m.max_cpu()),
            Ok(Some(7))
        );
    }
}
