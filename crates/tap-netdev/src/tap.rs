//! Opening taps through `/dev/net/tun`, and vhost-net descriptors.

use std::num::NonZeroU8;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::stat::Mode;

use crate::error::TapError;
use crate::name::TapName;

/// The tun/tap clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// The vhost-net character device.
pub const VHOST_NET_DEVICE: &str = "/dev/vhost-net";

// `TUNSETIFF`, `TUNGETIFF` and `TUNGETFEATURES` are declared with an `int`
// size in <linux/if_tun.h> but take a `struct ifreq` (or an `unsigned int`),
// hence the "bad" forms. The request numbers come from libc.
mod ioctl {
    #![allow(unreachable_pub)]
    use nix::libc;

    nix::ioctl_readwrite_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_read_bad!(tun_get_iff, libc::TUNGETIFF, libc::ifreq);
    nix::ioctl_read_bad!(tun_get_features, libc::TUNGETFEATURES, libc::c_uint);
}

const IFF_TAP: u16 = libc::IFF_TAP as u16;
const IFF_NO_PI: u16 = libc::IFF_NO_PI as u16;
const IFF_VNET_HDR: u16 = libc::IFF_VNET_HDR as u16;
const IFF_MULTI_QUEUE: u16 = libc::IFF_MULTI_QUEUE as u16;

/// How to open a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOptions {
    /// The interface name; `None` lets the kernel pick `tapN`.
    pub name: Option<TapName>,
    /// Ask for `IFF_VNET_HDR` (the hvparam `vnet_hdr`). It is enabled only
    /// if the kernel offers it; [`Tap::vnet_hdr`] tells.
    pub vnet_hdr: bool,
    /// Number of queues, one descriptor each (`IFF_MULTI_QUEUE` when more
    /// than one).
    pub queues: NonZeroU8,
    /// Also open one `/dev/vhost-net` descriptor per queue.
    pub vhost: bool,
}

impl Default for TapOptions {
    /// A single-queue tap with a kernel-assigned name, no vnet header and no
    /// vhost-net.
    fn default() -> Self {
        TapOptions {
            name: None,
            vnet_hdr: false,
            queues: NonZeroU8::MIN,
            vhost: false,
        }
    }
}

/// An open tap: one descriptor per queue, and the vhost-net descriptors.
///
/// The tap is not persistent: it disappears when the last descriptor closes,
/// so hand the descriptors to QEMU (clearing `FD_CLOEXEC` in the child) and
/// drop them here afterwards.
#[derive(Debug)]
pub struct Tap {
    name: TapName,
    fds: Vec<OwnedFd>,
    vhost_fds: Vec<OwnedFd>,
    vnet_hdr: bool,
}

impl Tap {
    /// Opens a tap as `options` say. Every descriptor is opened with
    /// `O_CLOEXEC`; on failure every descriptor opened so far is closed, so
    /// the tap is gone again.
    ///
    /// `TUNGETFEATURES` is probed once. If it fails, no optional feature is
    /// assumed: `vnet_hdr` stays off, and more than one queue is
    /// [`TapError::MultiQueueUnsupported`].
    pub fn open(options: &TapOptions) -> Result<Tap, TapError> {
        let queues = options.queues.get();
        let mut fds = Vec::with_capacity(usize::from(queues));
        let mut vhost_fds = Vec::new();

        let first = open_tun()?;
        let flags = IFF_TAP | IFF_NO_PI | wanted_flags(options, probe_features(&first))?;
        let name = attach(&first, options.name.as_ref(), flags)?;
        fds.push(first);
        for _ in 1..queues {
            let fd = open_tun()?;
            // The same name, so every queue attaches to the same interface.
            attach(&fd, Some(&name), flags)?;
            fds.push(fd);
        }
        if options.vhost {
            for _ in 0..queues {
                vhost_fds.push(open_vhost()?);
            }
        }
        let vnet_hdr = flags & IFF_VNET_HDR != 0;
        tracing::debug!(tap = %name, queues, vnet_hdr, vhost = options.vhost, "opened tap");
        Ok(Tap {
            name,
            fds,
            vhost_fds,
            vnet_hdr,
        })
    }

    /// The interface name (kernel-assigned unless one was given).
    pub fn name(&self) -> &TapName {
        &self.name
    }

    /// One tap descriptor per queue.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// One vhost-net descriptor per queue, or none.
    pub fn vhost_fds(&self) -> &[OwnedFd] {
        &self.vhost_fds
    }

    /// Whether `IFF_VNET_HDR` was actually enabled.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The tap descriptors and the vhost-net descriptors, e.g. to pass to
    /// QEMU.
    pub fn into_fds(self) -> (Vec<OwnedFd>, Vec<OwnedFd>) {
        (self.fds, self.vhost_fds)
    }
}

/// What `TUNGETIFF` says about a tap descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TapInfo {
    /// The interface the descriptor is attached to.
    pub name: TapName,
    /// `IFF_VNET_HDR` is set.
    pub vnet_hdr: bool,
    /// `IFF_MULTI_QUEUE` is set.
    pub multi_queue: bool,
}

/// Asks the kernel which interface and flags a tap descriptor has.
pub fn tap_info(fd: BorrowedFd<'_>) -> Result<TapInfo, TapError> {
    let mut req = ifreq_for(None, 0);
    // SAFETY: `req` is a valid `struct ifreq` the kernel writes into.
    unsafe { ioctl::tun_get_iff(fd.as_raw_fd(), &mut req) }.map_err(TapError::QueryTap)?;
    // SAFETY: TUNGETIFF fills `ifru_flags`; every bit pattern is a c_short.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as u16;
    Ok(TapInfo {
        name: name_of(&req)?,
        vnet_hdr: flags & IFF_VNET_HDR != 0,
        multi_queue: flags & IFF_MULTI_QUEUE != 0,
    })
}

fn open_tun() -> Result<OwnedFd, TapError> {
    open(TUN_DEVICE, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(TapError::OpenTun)
}

/// `TUNSETIFF`: attaches `fd` to the tap `name` (created if needed, named by
/// the kernel if `None`) and returns the interface's name.
fn attach(fd: &OwnedFd, name: Option<&TapName>, flags: u16) -> Result<TapName, TapError> {
    let mut req = ifreq_for(name, flags);
    // SAFETY: `req` is a valid, initialised `struct ifreq` that the kernel
    // reads and writes back; `fd` is an open /dev/net/tun descriptor.
    unsafe { ioctl::tun_set_iff(fd.as_raw_fd(), &mut req) }.map_err(|source| {
        TapError::CreateTap {
            name: name.map(|n| n.as_str().to_owned()),
            source,
        }
    })?;
    name_of(&req)
}

/// `TUNGETFEATURES`, or `None` (with a warning) when the kernel refuses it.
fn probe_features(fd: &OwnedFd) -> Option<u16> {
    let mut features: libc::c_uint = 0;
    // SAFETY: `features` is a valid `unsigned int` the kernel writes into.
    match unsafe { ioctl::tun_get_features(fd.as_raw_fd(), &mut features) } {
        Ok(_) => Some(features as u16),
        Err(errno) => {
            tracing::warn!(%errno, "TUNGETFEATURES failed; assuming no optional tap features");
            None
        }
    }
}

/// The optional flags `options` ask for that the kernel's `features` allow.
fn wanted_flags(options: &TapOptions, features: Option<u16>) -> Result<u16, TapError> {
    let features = features.unwrap_or(0);
    let mut flags = 0;
    if options.vnet_hdr {
        if features & IFF_VNET_HDR != 0 {
            flags |= IFF_VNET_HDR;
        } else {
            tracing::warn!("the kernel does not support IFF_VNET_HDR, not enabling it");
        }
    }
    if options.queues.get() > 1 {
        if features & IFF_MULTI_QUEUE == 0 {
            return Err(TapError::MultiQueueUnsupported {
                queues: options.queues.get(),
            });
        }
        flags |= IFF_MULTI_QUEUE;
    }
    Ok(flags)
}

/// A zeroed 40-byte `struct ifreq` with a name and flags.
fn ifreq_for(name: Option<&TapName>, flags: u16) -> libc::ifreq {
    // SAFETY: `struct ifreq` is plain old data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if let Some(name) = name {
        // TapName holds at most 15 bytes, so the NUL terminator stays.
        for (dst, src) in req.ifr_name.iter_mut().zip(name.as_str().bytes()) {
            *dst = src as libc::c_char;
        }
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

/// The NUL-terminated name in an `ifreq`.
fn name_of(req: &libc::ifreq) -> Result<TapName, TapError> {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    TapName::new(&String::from_utf8_lossy(&bytes))
}

fn open_vhost() -> Result<OwnedFd, TapError> {
    match open(
        VHOST_NET_DEVICE,
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT | Errno::ENODEV | Errno::ENXIO) => Err(TapError::VhostNetMissing),
        Err(errno) => Err(TapError::OpenVhost(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(vnet_hdr: bool, queues: u8) -> TapOptions {
        TapOptions {
            vnet_hdr,
            queues: NonZeroU8::new(queues).unwrap(),
            ..TapOptions::default()
        }
    }

    #[test]
    fn ifreq_is_the_kernels_40_bytes() {
        assert_eq!(std::mem::size_of::<libc::ifreq>(), 40);
    }

    #[test]
    fn ioctl_numbers_match_ganetis_constants() {
        assert_eq!(libc::TUNSETIFF, 0x400454ca);
        assert_eq!(libc::TUNGETIFF, 0x800454d2);
        assert_eq!(libc::TUNGETFEATURES, 0x800454cf);
    }

    #[test]
    fn vnet_hdr_is_set_when_asked_and_offered() {
        let flags = wanted_flags(&options(true, 1), Some(IFF_VNET_HDR | IFF_MULTI_QUEUE));
        assert_eq!(flags.unwrap(), IFF_VNET_HDR);
    }

    #[test]
    fn vnet_hdr_is_left_off_when_not_offered() {
        let flags = wanted_flags(&options(true, 1), Some(IFF_MULTI_QUEUE));
        assert_eq!(flags.unwrap(), 0);
    }

    #[test]
    fn vnet_hdr_is_left_off_when_not_asked() {
        let flags = wanted_flags(&options(false, 1), Some(IFF_VNET_HDR));
        assert_eq!(flags.unwrap(), 0);
    }

    #[test]
    fn multi_queue_is_set_for_more_than_one_queue() {
        let flags = wanted_flags(&options(false, 4), Some(IFF_VNET_HDR | IFF_MULTI_QUEUE));
        assert_eq!(flags.unwrap(), IFF_MULTI_QUEUE);
    }

    #[test]
    fn multi_queue_without_kernel_support_is_an_error() {
        let err = wanted_flags(&options(true, 4), None).unwrap_err();
        assert!(matches!(err, TapError::MultiQueueUnsupported { queues: 4 }));
    }

    #[test]
    fn ifreq_carries_name_and_flags() {
        let name = TapName::new("abcdefghijklmno").unwrap();
        let req = ifreq_for(Some(&name), IFF_TAP | IFF_NO_PI);
        assert_eq!(name_of(&req).unwrap(), name);
        assert_eq!(req.ifr_name[15], 0);
        // SAFETY: the flags member was just written.
        assert_eq!(unsafe { req.ifr_ifru.ifru_flags }, 0x1002);
    }
}
