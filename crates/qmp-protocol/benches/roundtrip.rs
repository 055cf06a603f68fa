//! Round trips of `query-status` against a real QEMU (`-machine none -S`),
//! this crate's client next to a minimal blocking client (one request out,
//! one line in, no parsing) as the floor; and connect + handshake time.
//!
//! Run: `cargo bench -p qmp-protocol --bench roundtrip -- --warm-up-time 1 --measurement-time 3`

// The benchmark starts QEMU itself; see tests/real_qemu.rs.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use qmp_protocol::{Client, QueryStatus, RunState};

/// A QEMU serving QMP on a socket in a temporary directory; killed and
/// cleaned up on drop.
struct Qemu {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Qemu {
    fn start() -> Qemu {
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
struct BlockingClient {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
}

impl BlockingClient {
    fn connect(qemu: &Qemu) -> BlockingClient {
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

    fn request(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.read_line();
        assert!(self.line.starts_with("{\"return\""), "{}", self.line);
    }
}

fn round_trips(c: &mut Criterion) {
    let qemu = Qemu::start();
    let mut group = c.benchmark_group("query-status round trip");
    group.throughput(Throughput::Elements(1));

    {
        let mut floor = BlockingClient::connect(&qemu);
        group.bench_function("blocking floor", |b| {
            b.iter(|| floor.request(b"{\"execute\":\"query-status\",\"id\":1}"))
        });
    }

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        let client = current.block_on(Client::connect(&qemu.socket)).unwrap();
        group.bench_function("qmp-protocol, current-thread runtime", |b| {
            b.iter_custom(|iters| {
                current.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let status = client.execute(QueryStatus).await.unwrap();
                        assert_eq!(status.status, RunState::Prelaunch);
                    }
                    start.elapsed()
                })
            })
        });
        current.block_on(async move {
            drop(client);
        });
    }

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    {
        let client = multi.block_on(Client::connect(&qemu.socket)).unwrap();
        group.bench_function("qmp-protocol, multi-thread runtime", |b| {
            b.iter_custom(|iters| {
                multi.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let status = client.execute(QueryStatus).await.unwrap();
                        assert_eq!(status.status, RunState::Prelaunch);
                    }
                    start.elapsed()
                })
            })
        });
        multi.block_on(async move {
            drop(client);
        });
    }
    group.finish();

    let mut group = c.benchmark_group("connect + handshake");
    group.bench_function("blocking floor", |b| {
        b.iter(|| drop(BlockingClient::connect(&qemu)))
    });
    group.bench_function("qmp-protocol, current-thread runtime", |b| {
        b.iter(|| {
            current.block_on(async {
                let client = Client::connect(&qemu.socket).await.unwrap();
                drop(client);
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trips
}
criterion_main!(benches);
