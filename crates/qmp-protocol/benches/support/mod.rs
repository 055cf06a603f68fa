//! What the round-trip benchmark and the interleaved comparison share: a
//! QEMU to talk to and the blocking floor client.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The request both clients send: the same bytes, since QEMU's per-byte
/// parsing cost shows in the round trip (the client reuses the ids of
/// answered commands, so its id stays `1` when commands go one at a time).
pub(crate) const QUERY_STATUS: &[u8] = b"{\"execute\":\"query-status\",\"id\":1}";

/// A QEMU serving QMP on a socket in a temporary directory; killed and
/// cleaned up on drop.
pub(crate) struct Qemu {
    child: Child,
    dir: PathBuf,
    /// The QMP socket.
    pub(crate) socket: PathBuf,
}

impl Qemu {
    /// Start `qemu-system-x86_64 -machine none -S` with a QMP socket.
    pub(crate) fn start() -> Qemu {
        let dir = std::env::temp_dir().join(format!("qmp-protocol-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let fd = listener.as_raw_fd();
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-machine", "none", "-S", "-nodefaults", "-display", "none"])
            .arg("-chardev")
            .arg(format!("socket,id=qmp,fd={fd},server=on,wait=off"))
            .args(["-mon", "chardev=qmp,mode=control"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only fcntl (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                fcntl(
                    BorrowedFd::borrow_raw(fd),
                    FcntlArg::F_SETFD(FdFlag::empty()),
                )?;
                Ok(())
            });
        }
        let child = command.spawn().expect("start qemu-system-x86_64");
        drop(listener);
        Qemu { child, dir, socket }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The floor: blocking I/O, fixed request bytes, no JSON parsing.
pub(crate) struct BlockingClient {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
}

impl BlockingClient {
    /// Connect and negotiate.
    pub(crate) fn connect(qemu: &Qemu) -> BlockingClient {
        let writer = UnixStream::connect(&qemu.socket).unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        let mut client = BlockingClient {
            writer,
            reader,
            line: String::new(),
        };
        client.read_line();
        assert!(client.line.starts_with("{\"QMP\""));
        client.request(b"{\"execute\":\"qmp_capabilities\",\"id\":0}");
        client
    }

    fn read_line(&mut self) {
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
    }

    /// Send `bytes`, read one line, check it is a `return`.
    pub(crate) fn request(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.read_line();
        assert!(self.line.starts_with("{\"return\""), "{}", self.line);
    }
}
