//! A failing open closes every descriptor it opened. Alone in its test
//! binary, because it counts the process's descriptors and lowers its
//! RLIMIT_NOFILE; needs root and /dev/net/tun (see `common::in_netns`).

mod common;

use std::num::NonZeroU8;

use common::in_netns;
use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tap_netdev::{Netlink, Tap, TapError, TapName, TapOptions};

/// The descriptor numbers this process has open, probed with
/// `fcntl(F_GETFD)` so that looking opens no descriptor itself.
fn open_fds() -> Vec<i32> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let upto = i32::try_from(soft.min(65536)).unwrap();
    (0..upto)
        // SAFETY: F_GETFD only reads the descriptor's flags.
        .filter(|&fd| unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } != -1)
        .collect()
}

/// The descriptor limit that leaves exactly `free` numbers unused.
fn limit_leaving(free: usize) -> u64 {
    let fds = open_fds();
    let limit = (0i32..)
        .find(|&n| n as usize - fds.iter().filter(|&&fd| fd < n).count() == free)
        .unwrap();
    u64::try_from(limit).unwrap()
}

#[test]
fn failing_third_queue_closes_the_first_two() {
    in_netns(|| async {
        let nl = Netlink::new()?;
        let before = open_fds();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        // Two tap descriptors fit, the third open fails with EMFILE.
        setrlimit(Resource::RLIMIT_NOFILE, limit_leaving(2), hard)?;

        let result = Tap::open(&TapOptions {
            name: Some(TapName::new("kvmhvleak0")?),
            vnet_hdr: true,
            queues: NonZeroU8::new(4).unwrap(),
            vhost: false,
        });
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;

        let err = result.unwrap_err();
        assert!(matches!(err, TapError::OpenTun(Errno::EMFILE)), "{err:?}");
        assert_eq!(open_fds(), before);
        assert!(!nl.exists("kvmhvleak0").await?);
        Ok(())
    });
}
