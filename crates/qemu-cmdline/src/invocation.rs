//! The typed model of one QEMU invocation and its rendering to argv.

use std::path::PathBuf;

use crate::blockdev::Blockdev;
use crate::caps::Features;
use crate::opts::{Opts, escape};

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Emulation.
    Tcg,
}

/// `-smp`: 0 leaves a field to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Smp {
    /// vCPUs.
    pub cpus: u32,
    /// Sockets.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

/// A direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// `-kernel`.
    pub kernel: PathBuf,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append`.
    pub append: String,
}

/// The display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Display {
    /// `-display none`.
    None,
    /// `-vnc <opts>` (the first value is the address, e.g. `127.0.0.1:5`).
    Vnc(Opts),
    /// `-spice <opts>`.
    Spice(Opts),
}

/// Whom QEMU runs as, and where it is chrooted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunWith {
    /// A user name or uid to drop privileges to.
    pub user: Option<String>,
    /// A directory to chroot into.
    pub chroot: Option<PathBuf>,
}

/// One QEMU invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The binary.
    pub binary: PathBuf,
    /// `-name`.
    pub name: String,
    /// `-name` and `-smp` in the forms Ganeti writes, `-name NAME` and
    /// `-smp N[,cores=C][,threads=T][,sockets=S]`, instead of
    /// `guest=NAME,debug-threads=on` and `cpus=N,…`: Ganeti's liveness
    /// check reads them (3.0 compares the whole `-name` value with the
    /// instance's name, master the part before the first comma; both take
    /// the vCPU count as the integer before the first comma of `-smp`).
    /// The guest sees the same; QEMU's threads go unnamed.
    pub ganeti_forms: bool,
    /// `-uuid`.
    pub uuid: Option<String>,
    /// The machine type.
    pub machine: String,
    /// Extra `-machine` properties, in order.
    pub machine_props: Vec<(String, String)>,
    /// `-accel`.
    pub accel: Accel,
    /// `-cpu`.
    pub cpu: Option<String>,
    /// `-smp`.
    pub smp: Smp,
    /// `-m`, MiB.
    pub memory_mib: u64,
    /// `-mem-path` (with `-mem-prealloc`).
    pub mem_path: Option<PathBuf>,
    /// `-pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `-daemonize`.
    pub daemonize: bool,
    /// `-S`.
    pub paused: bool,
    /// ACPI on.
    pub acpi: bool,
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// `-sandbox on,…` with every deny option.
    pub sandbox: bool,
    /// Privilege drop and chroot.
    pub run_with: RunWith,
    /// `-chardev`s.
    pub chardevs: Vec<Opts>,
    /// `-mon chardev=ID,mode=control|readline`: (chardev id, control?).
    pub monitors: Vec<(String, bool)>,
    /// `-serial` values (`chardev:ID`, `none`).
    pub serials: Vec<String>,
    /// The display.
    pub display: Display,
    /// `-vga`.
    pub vga: Option<String>,
    /// `-k`.
    pub keymap: Option<String>,
    /// `-rtc`.
    pub rtc: Option<Opts>,
    /// `-kernel`/`-initrd`/`-append`.
    pub kernel: Option<KernelBoot>,
    /// `-object`s.
    pub objects: Vec<Opts>,
    /// `-blockdev`s.
    pub blockdevs: Vec<Blockdev>,
    /// `-netdev`s.
    pub netdevs: Vec<Opts>,
    /// `-device`s, in order.
    pub devices: Vec<Opts>,
    /// `-audio` (or a sound device on QEMUs without it).
    pub audio: Option<Audio>,
    /// `-incoming`.
    pub incoming: Option<String>,
    /// Appended verbatim (`kvm_extra`).
    pub extra: Vec<String>,
}

/// A sound card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// The card model (`hda`, `ac97`, …).
    pub model: String,
    /// The host backend (`none`, `spice`).
    pub driver: String,
}

impl Invocation {
    /// A minimal invocation to build on.
    pub fn new(binary: impl Into<PathBuf>, name: &str, machine: &str) -> Invocation {
        Invocation {
            binary: binary.into(),
            name: name.to_owned(),
            ganeti_forms: false,
            uuid: None,
            machine: machine.to_owned(),
            machine_props: Vec::new(),
            accel: Accel::Tcg,
            cpu: None,
            smp: Smp {
                cpus: 1,
                ..Smp::default()
            },
            memory_mib: 128,
            mem_path: None,
            pidfile: None,
            daemonize: false,
            paused: false,
            acpi: true,
            no_reboot: false,
            sandbox: false,
            run_with: RunWith::default(),
            chardevs: Vec::new(),
            monitors: Vec::new(),
            serials: Vec::new(),
            display: Display::None,
            vga: None,
            keymap: None,
            rtc: None,
            kernel: None,
            objects: Vec::new(),
            blockdevs: Vec::new(),
            netdevs: Vec::new(),
            devices: Vec::new(),
            audio: None,
            incoming: None,
            extra: Vec::new(),
        }
    }

    /// Renders the argv for a QEMU with `features`. Deprecated options are
    /// never emitted where a replacement exists: ACPI goes into `-machine`,
    /// privilege drop into `-run-with`, sound into `-audio`, and `-nodefaults`
    /// is always given, so every device is explicit.
    pub fn render(&self, features: &Features) -> Vec<String> {
        let mut a: Vec<String> = vec![self.binary.display().to_string()];
        let legacy_no_acpi = self.render_machine(features, &mut a);
        self.render_flags(features, legacy_no_acpi, &mut a);
        self.render_run_with(features, &mut a);
        self.render_consoles(&mut a);
        self.render_devices(features, &mut a);
        a.extend(self.extra.iter().cloned());
        a
    }

    /// `-name` to `-m` and `-mem-path`: what the machine is. Returns
    /// whether ACPI is turned off the old way (`-no-acpi`).
    fn render_machine(&self, features: &Features, a: &mut Vec<String>) -> bool {
        let name = if self.ganeti_forms {
            escape(&self.name)
        } else if features.debug_threads {
            format!("guest={},debug-threads=on", escape(&self.name))
        } else {
            format!("guest={}", escape(&self.name))
        };
        opt(a, "-name", name);
        if let Some(u) = &self.uuid {
            opt(a, "-uuid", u.clone());
        }
        let mut machine = Opts::pairs().set("type", &self.machine);
        for (k, v) in &self.machine_props {
            machine.push(k, v.as_str());
        }
        let legacy_no_acpi =
            !self.acpi && !features.machine_acpi_property && features.no_acpi_option;
        if !self.acpi && !legacy_no_acpi {
            machine.push("acpi", false);
        }
        opt(a, "-machine", machine.to_string());
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        opt(a, "-accel", accel.to_owned());
        if let Some(cpu) = &self.cpu {
            opt(a, "-cpu", cpu.clone());
        }
        let positive = |n: u32| (n > 0).then_some(n);
        let smp = if self.ganeti_forms {
            let mut smp = self.smp.cpus.to_string();
            for (key, n) in [
                ("cores", self.smp.cores),
                ("threads", self.smp.threads),
                ("sockets", self.smp.sockets),
            ] {
                if n > 0 {
                    smp.push_str(&format!(",{key}={n}"));
                }
            }
            smp
        } else {
            Opts::pairs()
                .set("cpus", self.smp.cpus)
                .set_opt("sockets", positive(self.smp.sockets))
                .set_opt("cores", positive(self.smp.cores))
                .set_opt("threads", positive(self.smp.threads))
                .to_string()
        };
        opt(a, "-smp", smp);
        opt(a, "-m", self.memory_mib.to_string());
        if let Some(p) = &self.mem_path {
            opt(a, "-mem-path", p.display().to_string());
            a.push("-mem-prealloc".into());
        }
        legacy_no_acpi
    }

    /// `-nodefaults` to `-sandbox`: how QEMU runs.
    fn render_flags(&self, features: &Features, legacy_no_acpi: bool, a: &mut Vec<String>) {
        a.push("-nodefaults".into());
        a.push("-no-user-config".into());
        if let Some(p) = &self.pidfile {
            opt(a, "-pidfile", p.display().to_string());
        }
        for (on, flag) in [
            (self.daemonize, "-daemonize"),
            (legacy_no_acpi, "-no-acpi"),
            (self.no_reboot, "-no-reboot"),
            (self.paused, "-S"),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        if self.sandbox && features.sandbox {
            // With a privilege drop, QEMU changes uid after installing the
            // filter, so elevateprivileges=deny would kill it (SIGSYS); the
            // unprivileged user cannot elevate anyway.
            let elevate = if self.run_with.user.is_some() {
                ""
            } else {
                ",elevateprivileges=deny"
            };
            opt(
                a,
                "-sandbox",
                format!("on,obsolete=deny{elevate},spawn=deny,resourcecontrol=deny"),
            );
        }
    }

    /// Character devices, monitors, serial ports, the display, and the
    /// kernel to boot.
    fn render_consoles(&self, a: &mut Vec<String>) {
        for c in &self.chardevs {
            opt(a, "-chardev", c.to_string());
        }
        for (chardev, control) in &self.monitors {
            let mode = if *control { "control" } else { "readline" };
            opt(a, "-mon", format!("chardev={chardev},mode={mode}"));
        }
        for s in &self.serials {
            opt(a, "-serial", s.clone());
        }
        match &self.display {
            Display::None => opt(a, "-display", "none".into()),
            Display::Vnc(o) => opt(a, "-vnc", o.to_string()),
            Display::Spice(o) => opt(a, "-spice", o.to_string()),
        }
        if let Some(v) = &self.vga {
            opt(a, "-vga", v.clone());
        }
        if let Some(k) = &self.keymap {
            opt(a, "-k", k.clone());
        }
        if let Some(r) = &self.rtc {
            opt(a, "-rtc", r.to_string());
        }
        if let Some(k) = &self.kernel {
            opt(a, "-kernel", k.kernel.display().to_string());
            if let Some(i) = &k.initrd {
                opt(a, "-initrd", i.display().to_string());
            }
            opt(a, "-append", k.append.clone());
        }
    }

    /// Objects, block nodes, netdevs, devices, audio, `-incoming`.
    fn render_devices(&self, features: &Features, a: &mut Vec<String>) {
        for o in &self.objects {
            opt(a, "-object", o.to_string());
        }
        for b in &self.blockdevs {
            opt(a, "-blockdev", b.to_keyval());
        }
        for n in &self.netdevs {
            opt(a, "-netdev", n.to_string());
        }
        for d in &self.devices {
            opt(a, "-device", d.to_string());
        }
        if let Some(audio) = &self.audio {
            if features.audio_option || !features.soundhw_option {
                let audio = Opts::pairs()
                    .set("driver", &audio.driver)
                    .set("model", &audio.model)
                    .set("id", "soundhw");
                opt(a, "-audio", audio.to_string());
            } else {
                opt(a, "-soundhw", audio.model.clone());
            }
        }
        if let Some(i) = &self.incoming {
            opt(a, "-incoming", i.clone());
        }
    }

    fn render_run_with(&self, features: &Features, a: &mut Vec<String>) {
        let RunWith { user, chroot } = &self.run_with;
        if user.is_none() && chroot.is_none() {
            return;
        }
        if features.run_with || !(features.runas || features.chroot_option) {
            let mut o = Opts::pairs();
            if let Some(u) = user {
                o.push("user", u.as_str());
            }
            if let Some(c) = chroot {
                o.push("chroot", c.display().to_string());
            }
            a.push("-run-with".into());
            a.push(o.to_string());
        } else {
            if let Some(u) = user {
                a.push("-runas".into());
                a.push(u.clone());
            }
            if let Some(c) = chroot {
                a.push("-chroot".into());
                a.push(c.display().to_string());
            }
        }
    }
}

/// Formats `addr:port` with IPv6 addresses bracketed (`[2001:db8::1]:5`).
pub fn host_port(addr: &str, port: impl std::fmt::Display) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// Appends `flag value`.
fn opt(a: &mut Vec<String>, flag: &str, value: String) {
    a.push(flag.to_owned());
    a.push(value);
}

#[cfg(test)]
mod ganeti_forms_tests {
    use super::*;

    fn name_and_smp(ganeti_forms: bool) -> (String, String) {
        let help = "QEMU emulator version 7.2.22\n";
        let caps = crate::QemuCaps::from_help(help, None, None).expect("caps");
        let mut inv = Invocation::new("/usr/bin/qemu-system-x86_64", "web1", "pc-i440fx-7.2");
        inv.ganeti_forms = ganeti_forms;
        inv.smp = Smp {
            cpus: 4,
            sockets: 2,
            cores: 2,
            threads: 1,
        };
        let argv = inv.render(&caps.features());
        let after = |flag: &str| {
            let at = argv.iter().position(|a| a == flag).expect(flag);
            argv[at + 1].clone()
        };
        (after("-name"), after("-smp"))
    }

    #[test]
    fn ganetis_forms_of_name_and_smp_are_what_its_liveness_check_reads() {
        assert_eq!(
            name_and_smp(false),
            (
                "guest=web1,debug-threads=on".to_owned(),
                "cpus=4,sockets=2,cores=2,threads=1".to_owned()
            )
        );
        assert_eq!(
            name_and_smp(true),
            (
                "web1".to_owned(),
                "4,cores=2,threads=1,sockets=2".to_owned()
            )
        );
    }
}
