//! An incoming instance that Ganeti's KVM layer started keeps Ganeti's
//! guest machine exactly: the guest part of the argv it recorded (its
//! "phase A", reference §3.1) is kept as it is, and only the host side is
//! ours, as Ganeti's own `AcceptInstance` does with its phase B (§3.2):
//! our name, pid file, monitors, serial console, sandbox and privileges,
//! the disks' and NICs' `-blockdev`/`-netdev`/`-device` (their ids and
//! PCI addresses are the record's, so they are what Ganeti gave them), and
//! `-incoming`.
//!
//! Dropped from Ganeti's argv, because ours replace them: `-name`,
//! `-pidfile`, `-daemonize` (we supervise QEMU), `-D` (QEMU's stderr goes
//! to our log), `-monitor`, `-qmp`, a `-serial` when ours has one, `-S`,
//! `-incoming`, `-chroot`, `-runas`, `-run-with`, `-sandbox`. Paths under
//! the source's run directory (a guest agent's socket, say) are moved to
//! ours.

/// Ganeti's host-side options that take a value.
const HOST_WITH_VALUE: &[&str] = &[
    "-name",
    "-pidfile",
    "-D",
    "-monitor",
    "-qmp",
    "-incoming",
    "-chroot",
    "-runas",
    "-run-with",
    "-sandbox",
];

/// Ganeti's host-side options without a value.
const HOST_BARE: &[&str] = &["-daemonize", "-S"];

/// Our options taken whole (with their value).
const OURS_TAKEN: &[&str] = &[
    "-name",
    "-pidfile",
    "-sandbox",
    "-mon",
    "-serial",
    "-incoming",
    "-run-with",
    "-runas",
    "-chroot",
    "-netdev",
    "-blockdev",
];

/// Our chardevs: the monitors and the serial console.
const OUR_CHARDEVS: &[&str] = &["qmp", "kvmd", "qmpuser", "hmp", "serial0"];

/// The value of `key=` in QEMU option text `opts` (`a,key=v,b=w`), or in
/// JSON option text.
fn opt_value<'a>(opts: &'a str, key: &str) -> Option<&'a str> {
    if opts.starts_with('{') {
        let pattern = format!("\"{key}\":\"");
        let at = opts.find(&pattern)? + pattern.len();
        return opts[at..].split('"').next();
    }
    opts.split(',')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

/// Splits an argv (without the binary) into options and their values: an
/// argument starting with `-` is an option; it takes the next argument as
/// its value unless that one starts with `-` too (no value of ours or
/// Ganeti's does).
fn options(args: &[String]) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let value = args
            .get(i + 1)
            .map(String::as_str)
            .filter(|v| !v.starts_with('-'));
        i += if value.is_some() { 2 } else { 1 };
        out.push((flag, value));
    }
    out
}

/// The source's run directory, from Ganeti's `-pidfile RUN/pid/NAME`.
fn source_run_dir(ganeti: &[String]) -> Option<String> {
    let at = ganeti.iter().position(|a| a == "-pidfile")?;
    let pidfile = std::path::Path::new(ganeti.get(at + 1)?);
    Some(pidfile.parent()?.parent()?.display().to_string())
}

/// The argv that starts Ganeti's guest machine (`ganeti`, the recorded
/// argv with its binary first) with our host side, taken from `ours` (the
/// argv we planned for the same instance); `devices` are the ids of the
/// disks and NICs whose `-device` is ours; `run` is our run directory.
pub(crate) fn keep_guest(
    ganeti: &[String],
    ours: &[String],
    devices: &[String],
    run: &str,
) -> Vec<String> {
    let Some((binary, our_args)) = ours.split_first() else {
        return ours.to_vec();
    };
    let source_run = source_run_dir(ganeti).filter(|s| s != run);
    let moved = |v: &str| match &source_run {
        Some(from) => v.replace(&format!("{from}/"), &format!("{run}/")),
        None => v.to_owned(),
    };
    let ours_opts = options(our_args);
    let ours_has_serial = ours_opts.iter().any(|(f, _)| *f == "-serial");
    let mut argv = vec![binary.clone()];
    for (flag, value) in options(ganeti.get(1..).unwrap_or_default()) {
        let host = HOST_BARE.contains(&flag)
            || (value.is_some() && HOST_WITH_VALUE.contains(&flag))
            || (flag == "-serial" && ours_has_serial);
        if host {
            continue;
        }
        argv.push(flag.to_owned());
        argv.extend(value.map(moved));
    }
    for (flag, value) in ours_opts {
        let Some(value) = value else { continue };
        if ours_host_side(flag, value, devices) {
            argv.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    argv
}

/// Whether our option `flag value` is of the host side (what
/// [`OURS_TAKEN`] and [`OUR_CHARDEVS`] name, and the `-device` of a disk
/// or NIC in `devices`) rather than of the guest's machine.
fn ours_host_side(flag: &str, value: &str, devices: &[String]) -> bool {
    OURS_TAKEN.contains(&flag)
        || (flag == "-chardev"
            && opt_value(value, "id").is_some_and(|id| OUR_CHARDEVS.contains(&id)))
        || (flag == "-device"
            && opt_value(value, "id").is_some_and(|id| devices.iter().any(|d| d == id)))
}

/// What Ganeti's own KVM layer needs of an instance we started, to run it
/// (on a migration's target, or after a node goes back to Ganeti's layer):
/// a phase A (reference §3.1) made of our guest part kept as it is, and
/// Ganeti's host side around it: `-name NAME` (as Ganeti 3.0 writes it:
/// its liveness check compares the whole value, so master's
/// `NAME,debug-threads=on` would read as not running there), `-pidfile`,
/// `-daemonize`, the HMP
/// `-monitor` and the `-serial` socket (or `none`) in the run directory
/// `run`. Left out, because Ganeti's phase B (§3.2) adds its own: the
/// disks' and NICs' options (`devices` are their ids), the QMP monitors,
/// `-S`. Left out too: `-D`, whose directory only Ganeti knows.
pub(crate) fn ganeti_phase_a(
    ours: &[String],
    devices: &[String],
    name: &str,
    run: &str,
    serial_console: bool,
) -> Vec<String> {
    let Some((binary, our_args)) = ours.split_first() else {
        return ours.to_vec();
    };
    let mut argv = vec![binary.clone(), "-name".into(), name.to_owned()];
    for (flag, value) in options(our_args) {
        let host = flag == "-S" || value.is_some_and(|v| ours_host_side(flag, v, devices));
        if host {
            continue;
        }
        argv.push(flag.to_owned());
        argv.extend(value.map(str::to_owned));
    }
    let serial = if serial_console {
        format!("unix:{run}/ctrl/{name}.serial,server,nowait")
    } else {
        "none".to_owned()
    };
    argv.extend([
        "-pidfile".to_owned(),
        format!("{run}/pid/{name}"),
        "-daemonize".to_owned(),
        "-monitor".to_owned(),
        format!("unix:{run}/ctrl/{name}.monitor,server,nowait"),
        "-serial".to_owned(),
        serial,
    ]);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    /// The argv we plan for web1 (a disk, a NIC), host side and guest
    /// part, as both directions of the conversion see it.
    fn our_argv() -> Vec<String> {
        v(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=web1,debug-threads=on",
            "-uuid",
            "4f1e2d3c-0000-4000-8000-123456789abc",
            "-machine",
            "type=pc-i440fx-7.2",
            "-m",
            "256",
            "-nodefaults",
            "-pidfile",
            "/srv/run/pid/web1",
            "-S",
            "-sandbox",
            "on,obsolete=deny",
            "-chardev",
            "socket,id=qmp,fd=3,server=on,wait=off",
            "-chardev",
            "socket,id=hmp,path=/srv/run/ctrl/web1.monitor,server=on,wait=off",
            "-chardev",
            "socket,id=serial0,path=/srv/run/ctrl/web1.serial,server=on,wait=off",
            "-chardev",
            "null,id=parallel0",
            "-mon",
            "chardev=qmp,mode=control",
            "-mon",
            "chardev=hmp,mode=readline",
            "-serial",
            "chardev:serial0",
            "-incoming",
            "defer",
            "-device",
            "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x3",
            "-device",
            "isa-parallel,chardev=parallel0",
            "-device",
            "virtio-blk-pci,id=disk-7c079136-2573-4112,bus=pci.0,addr=0xc,drive=disk-7c079136-2573-4112",
            "-blockdev",
            "{\"driver\":\"raw\",\"node-name\":\"disk-7c079136-2573-4112\"}",
            "-netdev",
            "tap,id=nic-003fc157-66a8-4e6d,fd=6",
            "-device",
            "virtio-net-pci,id=nic-003fc157-66a8-4e6d,bus=pci.0,addr=0xd,netdev=nic-003fc157-66a8-4e6d",
        ])
    }

    #[test]
    fn ganetis_guest_part_is_kept_and_the_host_side_is_ours() {
        let ganeti = v(&[
            "/usr/bin/kvm",
            "-name",
            "web1,debug-threads=on",
            "-m",
            "256",
            "-smp",
            "1",
            "-pidfile",
            "/var/run/ganeti/kvm-hypervisor/pid/web1",
            "-device",
            "virtio-balloon",
            "-daemonize",
            "-D",
            "/var/log/ganeti/kvm/web1.log",
            "-machine",
            "pc-i440fx-7.2",
            "-kernel",
            "/boot/vmlinuz",
            "-append",
            "root=/dev/ram0 console=ttyS0,115200",
            "-monitor",
            "unix:/var/run/ganeti/kvm-hypervisor/ctrl/web1.monitor,server,nowait",
            "-serial",
            "unix:/var/run/ganeti/kvm-hypervisor/ctrl/web1.serial,server,nowait",
            "-usb",
            "-display",
            "none",
            "-chardev",
            "socket,path=/var/run/ganeti/kvm-hypervisor/ctrl/web1.qga,server,nowait,id=qga0",
            "-uuid",
            "4f1e2d3c-0000-4000-8000-123456789abc",
            "-S",
        ]);
        let ours = our_argv();
        let devices = v(&["disk-7c079136-2573-4112", "nic-003fc157-66a8-4e6d"]);
        let got = keep_guest(&ganeti, &ours, &devices, "/srv/run");
        assert_eq!(
            got,
            v(&[
                "/usr/bin/qemu-system-x86_64",
                // Ganeti's guest part, as it was.
                "-m",
                "256",
                "-smp",
                "1",
                "-device",
                "virtio-balloon",
                "-machine",
                "pc-i440fx-7.2",
                "-kernel",
                "/boot/vmlinuz",
                "-append",
                "root=/dev/ram0 console=ttyS0,115200",
                "-usb",
                "-display",
                "none",
                "-chardev",
                "socket,path=/srv/run/ctrl/web1.qga,server,nowait,id=qga0",
                "-uuid",
                "4f1e2d3c-0000-4000-8000-123456789abc",
                // Our host side, the record's disks and NICs, -incoming.
                "-name",
                "guest=web1,debug-threads=on",
                "-pidfile",
                "/srv/run/pid/web1",
                "-sandbox",
                "on,obsolete=deny",
                "-chardev",
                "socket,id=qmp,fd=3,server=on,wait=off",
                "-chardev",
                "socket,id=hmp,path=/srv/run/ctrl/web1.monitor,server=on,wait=off",
                "-chardev",
                "socket,id=serial0,path=/srv/run/ctrl/web1.serial,server=on,wait=off",
                "-mon",
                "chardev=qmp,mode=control",
                "-mon",
                "chardev=hmp,mode=readline",
                "-serial",
                "chardev:serial0",
                "-incoming",
                "defer",
                "-device",
                "virtio-blk-pci,id=disk-7c079136-2573-4112,bus=pci.0,addr=0xc,drive=disk-7c079136-2573-4112",
                "-blockdev",
                "{\"driver\":\"raw\",\"node-name\":\"disk-7c079136-2573-4112\"}",
                "-netdev",
                "tap,id=nic-003fc157-66a8-4e6d,fd=6",
                "-device",
                "virtio-net-pci,id=nic-003fc157-66a8-4e6d,bus=pci.0,addr=0xd,netdev=nic-003fc157-66a8-4e6d",
            ])
        );
    }

    #[test]
    fn a_serial_ganeti_turned_off_stays_off_when_ours_has_none() {
        let ganeti = v(&["/usr/bin/kvm", "-serial", "none", "-usb"]);
        let ours = v(&["/usr/bin/qemu", "-name", "guest=a"]);
        assert_eq!(
            keep_guest(&ganeti, &ours, &[], "/run/x"),
            v(&[
                "/usr/bin/qemu",
                "-serial",
                "none",
                "-usb",
                "-name",
                "guest=a"
            ])
        );
    }

    #[test]
    fn our_guest_part_gets_ganetis_host_side_for_ganetis_layer() {
        let ours = our_argv();
        let devices = v(&["disk-7c079136-2573-4112", "nic-003fc157-66a8-4e6d"]);
        let run = "/var/run/ganeti/kvm-hypervisor";
        assert_eq!(
            ganeti_phase_a(&ours, &devices, "web1", run, true),
            v(&[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "web1",
                // Our guest part, as it is.
                "-uuid",
                "4f1e2d3c-0000-4000-8000-123456789abc",
                "-machine",
                "type=pc-i440fx-7.2",
                "-m",
                "256",
                "-nodefaults",
                "-chardev",
                "null,id=parallel0",
                "-device",
                "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x3",
                "-device",
                "isa-parallel,chardev=parallel0",
                // Ganeti's host side.
                "-pidfile",
                "/var/run/ganeti/kvm-hypervisor/pid/web1",
                "-daemonize",
                "-monitor",
                "unix:/var/run/ganeti/kvm-hypervisor/ctrl/web1.monitor,server,nowait",
                "-serial",
                "unix:/var/run/ganeti/kvm-hypervisor/ctrl/web1.serial,server,nowait",
            ])
        );
        let quiet = ganeti_phase_a(&ours, &devices, "web1", run, false);
        assert_eq!(quiet[quiet.len() - 2..], v(&["-serial", "none"]));
    }
}
