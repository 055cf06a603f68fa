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
        let mut push = |flag: &str, value: String| {
            a.push(flag.to_owned());
            a.push(value);
        };
        let name = if features.debug_threads {
            format!("guest={},debug-threads=on", escape(&self.name))
        } else {
            format!("guest={}", escape(&self.name))
        };
        push("-name", name);
        if let Some(u) = &self.uuid {
            push("-uuid", u.clone());
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
        push("-machine", machine.to_string());
        push(
            "-accel",
            match self.accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            }
            .to_owned(),
        );
        if let Some(cpu) = &self.cpu {
            push("-cpu", cpu.clone());
        }
        let smp = Opts::pairs()
            .set("cpus", self.smp.cpus)
            .set_opt(
                "sockets",
                (self.smp.sockets > 0).then_some(self.smp.sockets),
            )
            .set_opt("cores", (self.smp.cores > 0).then_some(self.smp.cores))
            .set_opt(
                "threads",
                (self.smp.threads > 0).then_some(self.smp.threads),
            );
        push("-smp", smp.to_string());
        push("-m", format!("{}", self.memory_mib));
        if let Some(p) = &self.mem_path {
            push("-mem-path", p.display().to_string());
            a.push("-mem-prealloc".into());
        }
        a.push("-nodefaults".into());
        a.push("-no-user-config".into());
        if let Some(p) = &self.pidfile {
            a.push("-pidfile".into());
            a.push(p.display().to_string());
        }
        if self.daemonize {
            a.push("-daemonize".into());
        }
        if legacy_no_acpi {
            a.push("-no-acpi".into());
        }
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        if self.paused {
            a.push("-S".into());
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
            a.push("-sandbox".into());
            a.push(format!(
                "on,obsolete=deny{elevate},spawn=deny,resourcecontrol=deny"
            ));
        }
        self.render_run_with(features, &mut a);
        for c in &self.chardevs {
            a.push("-chardev".into());
            a.push(c.to_string());
        }
        for (chardev, control) in &self.monitors {
            a.push("-mon".into());
            a.push(format!(
                "chardev={chardev},mode={}",
                if *control { "control" } else { "readline" }
            ));
        }
        for s in &self.serials {
            a.push("-serial".into());
            a.push(s.clone());
        }
        match &self.display {
            Display::None => {
                a.push("-display".into());
                a.push("none".into());
            }
            Display::Vnc(o) => {
                a.push("-vnc".into());
                a.push(o.to_string());
            }
            Display::Spice(o) => {
                a.push("-spice".into());
                a.push(o.to_string());
            }
        }
        if let Some(v) = &self.vga {
            a.push("-vga".into());
            a.push(v.clone());
        }
        if let Some(k) = &self.keymap {
            a.push("-k".into());
            a.push(k.clone());
        }
        if let Some(r) = &self.rtc {
            a.push("-rtc".into());
            a.push(r.to_string());
        }
        if let Some(k) = &self.kernel {
            a.push("-kernel".into());
            a.push(k.kernel.display().to_string());
            if let Some(i) = &k.initrd {
                a.push("-initrd".into());
                a.push(i.display().to_string());
            }
            a.push("-append".into());
            a.push(k.append.clone());
        }
        for o in &self.objects {
            a.push("-object".into());
            a.push(o.to_string());
        }
        for b in &self.blockdevs {
            a.push("-blockdev".into());
            a.push(b.to_keyval());
        }
        for n in &self.netdevs {
            a.push("-netdev".into());
            a.push(n.to_string());
        }
        for d in &self.devices {
            a.push("-device".into());
            a.push(d.to_string());
        }
        if let Some(audio) = &self.audio {
            if features.audio_option || !features.soundhw_option {
                a.push("-audio".into());
                a.push(
                    Opts::pairs()
                        .set("driver", &audio.driver)
                        .set("model", &audio.model)
                        .set("id", "soundhw")
                        .to_string(),
                );
            } else {
                a.push("-soundhw".into());
                a.push(audio.model.clone());
            }
        }
        if let Some(i) = &self.incoming {
            a.push("-incoming".into());
            a.push(i.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
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
