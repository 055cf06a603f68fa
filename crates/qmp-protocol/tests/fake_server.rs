//! The client against a scripted QMP peer on a socketpair, for what a real
//! QEMU will not do on demand: events before the greeting, split and merged
//! writes, garbage, over-long lines, silence, EOF mid-message, an event that
//! overtakes its reply.
//!
//! Each test runs the peer's script as a task next to the client and joins it
//! at the end, so a failed expectation in the script fails the test.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use qmp_protocol::{
    AddFd, Client, ConnectOptions, DeviceDel, DeviceDeletedEvent, DisplayProtocol, EventFilter,
    GetFd, Handshake, ProtocolError, QemuVersion, QmpError, QueryBalloon, QueryStatus, RunState,
    SetPassword, StopEvent,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
const STATUS_RUNNING: &str = r#"{"status": "running", "singlestep": false, "running": true}"#;

/// The scripted end of the socketpair.
struct FakeQemu {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl FakeQemu {
    /// Send `text` as one write, with QEMU's `\r\n` line ending.
    async fn send_line(&mut self, text: &str) {
        self.send_raw(format!("{text}\r\n").as_bytes()).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next request. QMP requests are a stream of JSON objects, not
    /// necessarily newline-terminated, so parse as bytes arrive.
    async fn recv(&mut self) -> Value {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return value;
                }
                Some(Err(e)) if !e.is_eof() => panic!("client sent invalid JSON: {e}"),
                _ => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next request and the descriptors that came with its first byte.
    async fn recv_with_fds(&mut self) -> (Value, Vec<OwnedFd>) {
        assert!(self.buf.is_empty());
        let mut data = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let socket = self.stream.as_raw_fd();
        let (n, fds) = self
            .stream
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut data)];
                let msg = recvmsg::<()>(
                    socket,
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )?;
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these descriptors
                        // in this process for us; nothing else owns them.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                Ok((msg.bytes, fds))
            })
            .await
            .unwrap();
        self.buf.extend_from_slice(&data[..n]);
        (self.recv().await, fds)
    }

    /// Greet and accept `qmp_capabilities`.
    async fn handshake(&mut self) {
        self.send_line(GREETING).await;
        assert_eq!(
            self.recv().await,
            json!({"execute": "qmp_capabilities", "id": 0})
        );
        self.send_line(r#"{"return": {}, "id": 0}"#).await;
    }

    /// Wait until the client closes its end.
    async fn expect_eof(&mut self) {
        let mut chunk = [0u8; 64];
        assert_eq!(self.stream.read(&mut chunk).await.unwrap(), 0);
    }
}

fn socketpair() -> (UnixStream, FakeQemu) {
    let (client, server) = UnixStream::pair().unwrap();
    (
        client,
        FakeQemu {
            stream: server,
            buf: Vec::new(),
        },
    )
}

/// A negotiated client and the peer, after the handshake.
async fn session() -> (Client, FakeQemu) {
    session_with(ConnectOptions::new()).await
}

async fn session_with(options: ConnectOptions) -> (Client, FakeQemu) {
    let (client_end, mut qemu) = socketpair();
    let peer = tokio::spawn(async move {
        qemu.handshake().await;
        qemu
    });
    let client = Handshake::from_stream_with(client_end, options)
        .await
        .unwrap()
        .negotiate()
        .await
        .unwrap();
    (client, peer.await.unwrap())
}

fn event(name: &str, data: &str) -> String {
    format!(
        r#"{{"timestamp": {{"seconds": 1795642501, "microseconds": 263952}}, "event": "{name}", "data": {data}}}"#
    )
}

#[tokio::test]
async fn greeting_preceded_by_ten_events_is_accepted() {
    let (client_end, mut qemu) = socketpair();
    let peer = tokio::spawn(async move {
        for _ in 0..10 {
            qemu.send_line(&event("RESUME", "{}")).await;
        }
        qemu.handshake().await;
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 1})
        );
        qemu.send_line(&format!(r#"{{"return": {STATUS_RUNNING}, "id": 1}}"#))
            .await;
    });

    let handshake = Handshake::from_stream(client_end).await.unwrap();
    assert_eq!(
        handshake.greeting().version.qemu,
        QemuVersion::new(7, 2, 22)
    );
    assert_eq!(handshake.greeting().capabilities, vec!["oob".to_owned()]);
    let client = handshake.negotiate().await.unwrap();
    let status = client.execute(QueryStatus).await.unwrap();

    assert_eq!(status.status, RunState::Running);
    peer.await.unwrap();
}

#[tokio::test]
async fn reply_split_across_writes_is_reassembled() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-balloon", "id": 1})
        );
        qemu.send_raw(br#"{"return": {"act"#).await;
        qemu.send_raw(br#"ual": 536870912}, "#).await;
        qemu.send_raw(b"\"id\": 1}\r\n").await;
    });

    let balloon = client.execute(QueryBalloon).await.unwrap();

    assert_eq!(balloon.actual, 536870912);
    peer.await.unwrap();
}

#[tokio::test]
async fn event_and_reply_in_one_write_are_both_delivered() {
    let (client, mut qemu) = session().await;
    let mut stops = client.listen(EventFilter::of::<StopEvent>());
    let peer = tokio::spawn(async move {
        assert_eq!(qemu.recv().await, json!({"execute": "stop", "id": 1}));
        let both = format!(
            "{}\r\n{}\r\n",
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#,
            r#"{"return": {}, "id": 1}"#
        );
        qemu.send_raw(both.as_bytes()).await;
    });

    client.execute(qmp_protocol::Stop).await.unwrap();

    let stop = stops.try_next().unwrap();
    assert_eq!(stop.name, "STOP");
    assert_eq!(stop.data, json!({}));
    assert_eq!(stop.timestamp.seconds, 1);
    assert_eq!(stop.timestamp.microseconds, 2);
    peer.await.unwrap();
}

#[tokio::test]
async fn event_before_reply_reaches_listener_registered_before_command() {
    let (client, mut qemu) = session().await;
    let mut deleted = client.listen(DeviceDeletedEvent::for_device("disk-1234"));
    let peer = tokio::spawn(async move {
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "device_del", "arguments": {"id": "disk-1234"}, "id": 1})
        );
        qemu.send_line(&event(
            "DEVICE_DELETED",
            r#"{"device": "disk-9999", "path": "/machine/peripheral/disk-9999"}"#,
        ))
        .await;
        qemu.send_line(&event(
            "DEVICE_DELETED",
            r#"{"device": "disk-1234", "path": "/machine/peripheral/disk-1234"}"#,
        ))
        .await;
        qemu.send_line(r#"{"return": {}, "id": 1}"#).await;
    });

    client.execute(DeviceDel::new("disk-1234")).await.unwrap();
    let event = deleted.wait(Duration::from_secs(5)).await.unwrap();

    let data: DeviceDeletedEvent = event.decode().unwrap();
    assert_eq!(data.device.as_deref(), Some("disk-1234"));
    assert_eq!(data.path, "/machine/peripheral/disk-1234");
    assert!(deleted.try_next().is_none());
    peer.await.unwrap();
}

#[tokio::test]
async fn replies_out_of_order_reach_their_callers() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        // join! polls the balloon query first, so it goes out first.
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-balloon", "id": 1})
        );
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 2})
        );
        // Answer the later one first.
        qemu.send_line(r#"{"return": {"status": "paused", "running": false}, "id": 2}"#)
            .await;
        qemu.send_line(r#"{"return": {"actual": 1024}, "id": 1}"#)
            .await;
    });

    let (balloon, status) = tokio::join!(
        client.execute(QueryBalloon).into_future(),
        client.execute(QueryStatus).into_future()
    );

    assert_eq!(balloon.unwrap().actual, 1024);
    assert_eq!(status.unwrap().status, RunState::Paused);
    peer.await.unwrap();
}

#[tokio::test]
async fn error_reply_is_refused_with_class_and_desc() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        qemu.send_line(
            r#"{"id": 1, "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}"#,
        )
        .await;
    });

    let err = client.execute(DeviceDel::new("nope")).await.unwrap_err();

    match err {
        QmpError::Refused {
            command,
            class,
            desc,
        } => {
            assert_eq!(command, "device_del");
            assert_eq!(class, "DeviceNotFound");
            assert_eq!(desc, "Device 'nope' not found");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    peer.await.unwrap();
}

#[tokio::test]
async fn command_not_found_is_not_supported() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        qemu.send_line(r#"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command x-new has not been found"}}"#)
            .await;
    });

    let err = client.execute_raw("x-new", Value::Null).await.unwrap_err();

    assert!(
        matches!(err, QmpError::NotSupported { ref command, ref desc }
            if command == "x-new" && desc == "The command x-new has not been found"),
        "{err:?}"
    );
    peer.await.unwrap();
}

#[tokio::test]
async fn reply_of_wrong_shape_is_bad_reply_with_raw_json() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        qemu.send_line(r#"{"return": {"actual": "lots"}, "id": 1}"#)
            .await;
    });

    let err = client.execute(QueryBalloon).await.unwrap_err();

    assert!(
        matches!(err, QmpError::BadReply { ref command, ref raw, .. }
            if command == "query-balloon" && *raw == json!({"actual": "lots"})),
        "{err:?}"
    );
    peer.await.unwrap();
}

#[tokio::test]
async fn garbage_line_closes_the_connection_with_invalid_json() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        qemu.send_line("this is not QMP").await;
        qemu.expect_eof().await;
    });

    let err = client.execute(QueryStatus).await.unwrap_err();
    let after = client.execute(QueryStatus).await.unwrap_err();

    assert!(
        matches!(err, QmpError::Protocol { source: ProtocolError::InvalidJson { ref start, .. } }
            if start == "this is not QMP"),
        "{err:?}"
    );
    assert!(
        matches!(
            after,
            QmpError::Protocol {
                source: ProtocolError::InvalidJson { .. }
            }
        ),
        "{after:?}"
    );
    drop(client);
    peer.await.unwrap();
}

#[tokio::test]
async fn over_long_line_closes_the_connection_with_line_too_long() {
    let (client, mut qemu) = session_with(ConnectOptions::new().max_line_length(256)).await;
    let mut listener = client.events();
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        let long = format!(
            r#"{{"return": {{"package": "{}"}}, "id": 1}}"#,
            "x".repeat(300)
        );
        qemu.send_line(&long).await;
    });

    let err = client
        .execute_raw("query-version", Value::Null)
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            QmpError::Protocol {
                source: ProtocolError::LineTooLong { max: 256 }
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        listener.next().await.unwrap_err(),
        QmpError::Protocol {
            source: ProtocolError::LineTooLong { max: 256 }
        }
    ));
    peer.await.unwrap();
}

#[tokio::test]
async fn silence_times_out_and_the_connection_stays_usable() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 1})
        );
        // Say nothing until the client, having given up, sends the next one.
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-balloon", "id": 2})
        );
        qemu.send_line(&format!(r#"{{"return": {STATUS_RUNNING}, "id": 1}}"#))
            .await;
        qemu.send_line(r#"{"return": {"actual": 4096}, "id": 2}"#)
            .await;
        // Keep the connection open until the test is done with it.
        qemu
    });

    let err = client
        .execute(QueryStatus)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    let balloon = client.execute(QueryBalloon).await.unwrap();

    assert!(
        matches!(err, QmpError::Timeout { ref command, timeout }
            if command == "query-status" && timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "query-status got no reply within 100ms");
    assert_eq!(balloon.actual, 4096);
    assert!(!client.is_closed());
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn answered_ids_are_reused_and_abandoned_ones_are_not() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 1})
        );
        qemu.send_line(&format!(r#"{{"return": {STATUS_RUNNING}, "id": 1}}"#))
            .await;
        // Id 1 again; this time say nothing, the caller gives up.
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 1})
        );
        // Id 1 is retired: the next command gets a fresh one, and the late
        // reply to 1 must not reach it.
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-balloon", "id": 2})
        );
        qemu.send_line(r#"{"return": {"status": "paused", "running": false}, "id": 1}"#)
            .await;
        qemu.send_line(r#"{"return": {"actual": 4096}, "id": 2}"#)
            .await;
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "query-status", "id": 2})
        );
        qemu.send_line(&format!(r#"{{"return": {STATUS_RUNNING}, "id": 2}}"#))
            .await;
    });

    let first = client.execute(QueryStatus).await.unwrap();
    let abandoned = client
        .execute(QueryStatus)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    let balloon = client.execute(QueryBalloon).await.unwrap();
    let last = client.execute(QueryStatus).await.unwrap();

    assert_eq!(first.status, RunState::Running);
    assert!(
        matches!(abandoned, QmpError::Timeout { .. }),
        "{abandoned:?}"
    );
    assert_eq!(balloon.actual, 4096);
    assert_eq!(last.status, RunState::Running);
    peer.await.unwrap();
}

#[tokio::test]
async fn a_request_cut_off_at_its_deadline_closes_the_connection() {
    let (client, qemu) = session().await;
    // The peer reads nothing: an 8 MiB request fills the socket buffer and
    // is still half-written when its deadline passes.
    let big = json!({"data": "x".repeat(8 << 20)});

    let err = client
        .execute_raw("x-big", big)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    let after = client.execute(QueryStatus).await.unwrap_err();

    assert!(
        matches!(err, QmpError::Timeout { ref command, .. } if command == "x-big"),
        "{err:?}"
    );
    match after {
        QmpError::Disconnected { source: Some(io) } => {
            assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
            assert_eq!(io.to_string(), "a request was interrupted mid-write");
        }
        other => panic!("expected Disconnected with BrokenPipe, got {other:?}"),
    }
    assert!(client.is_closed());
    drop(qemu);
}

#[tokio::test]
async fn eof_mid_message_fails_the_pending_command() {
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        qemu.recv().await;
        qemu.send_raw(br#"{"return": {"stat"#).await;
        // Dropping the peer closes its end.
    });

    let err = client.execute(QueryStatus).await.unwrap_err();

    match err {
        QmpError::Disconnected { source: Some(io) } => {
            assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof)
        }
        other => panic!("expected Disconnected with UnexpectedEof, got {other:?}"),
    }
    peer.await.unwrap();
}

#[tokio::test]
async fn eof_between_messages_is_a_clean_disconnect() {
    let (client, mut qemu) = session().await;
    let mut listener = client.events();
    let peer = tokio::spawn(async move {
        qemu.recv().await;
    });

    let err = client.execute(QueryStatus).await.unwrap_err();
    let closed = client.closed().await;

    assert!(
        matches!(err, QmpError::Disconnected { source: None }),
        "{err:?}"
    );
    assert!(matches!(closed, QmpError::Disconnected { source: None }));
    assert!(client.is_closed());
    assert!(matches!(
        listener.next().await.unwrap_err(),
        QmpError::Disconnected { source: None }
    ));
    assert!(matches!(
        client.execute(QueryStatus).await.unwrap_err(),
        QmpError::Disconnected { source: None }
    ));
    peer.await.unwrap();
}

#[tokio::test]
async fn missing_greeting_times_out() {
    let (client_end, qemu) = socketpair();

    let err = Handshake::from_stream_with(
        client_end,
        ConnectOptions::new().handshake_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap_err();

    assert!(
        matches!(err, QmpError::Timeout { ref command, timeout }
            if command == "QMP greeting" && timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    drop(qemu);
}

#[tokio::test]
async fn reply_instead_of_greeting_is_not_a_greeting() {
    let (client_end, mut qemu) = socketpair();
    qemu.send_line(r#"{"return": {}, "id": 3}"#).await;

    let err = Handshake::from_stream(client_end).await.unwrap_err();

    assert!(
        matches!(err, QmpError::Protocol { source: ProtocolError::NotAGreeting { ref raw } }
            if *raw == json!({"return": {}, "id": 3})),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_capabilities_negotiation_is_refused() {
    let (client_end, mut qemu) = socketpair();
    let peer = tokio::spawn(async move {
        qemu.send_line(GREETING).await;
        qemu.recv().await;
        qemu.send_line(r#"{"id": 0, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}"#)
            .await;
    });

    let err = Handshake::from_stream(client_end)
        .await
        .unwrap()
        .negotiate()
        .await
        .unwrap_err();

    assert!(
        matches!(err, QmpError::NotSupported { ref command, .. } if command == "qmp_capabilities"),
        "{err:?}"
    );
    peer.await.unwrap();
}

#[tokio::test]
async fn dropping_the_client_closes_the_socket_and_ends_listeners() {
    let (client, mut qemu) = session().await;
    let mut listener = client.events();

    drop(client);

    assert!(matches!(
        listener.next().await.unwrap_err(),
        QmpError::Disconnected { source: None }
    ));
    qemu.expect_eof().await;
}

#[tokio::test]
async fn getfd_sends_the_descriptor_with_the_command() {
    let (client, mut qemu) = session().await;
    let (read_end, write_end) = std::io::pipe().unwrap();
    let peer = tokio::spawn(async move {
        let (request, fds) = qemu.recv_with_fds().await;
        assert_eq!(
            request,
            json!({"execute": "getfd", "arguments": {"fdname": "tapfd-0"}, "id": 1})
        );
        assert_eq!(fds.len(), 1);
        qemu.send_line(r#"{"return": {}, "id": 1}"#).await;
        fds.into_iter().next().unwrap()
    });

    client.get_fd("tapfd-0", write_end.as_fd()).await.unwrap();

    // What arrived is the pipe's write end: bytes written to it come out here.
    let received = std::fs::File::from(peer.await.unwrap());
    drop(write_end);
    std::io::Write::write_all(&mut &received, b"ping").unwrap();
    drop(received);
    let mut got = String::new();
    std::io::Read::read_to_string(&mut &read_end, &mut got).unwrap();
    assert_eq!(got, "ping");
}

#[tokio::test]
async fn add_fd_sends_the_descriptor_and_returns_the_set() {
    let (client, mut qemu) = session().await;
    let (_read_end, write_end) = std::io::pipe().unwrap();
    let peer = tokio::spawn(async move {
        let (request, fds) = qemu.recv_with_fds().await;
        assert_eq!(
            request,
            json!({"execute": "add-fd", "arguments": {"opaque": "disk-1"}, "id": 1})
        );
        assert_eq!(fds.len(), 1);
        qemu.send_line(r#"{"return": {"fdset-id": 0, "fd": 27}, "id": 1}"#)
            .await;
    });

    let info = client
        .add_fd(
            AddFd {
                fdset_id: None,
                opaque: Some("disk-1".to_owned()),
            },
            write_end.as_fd(),
        )
        .await
        .unwrap();

    assert_eq!(info.fdset_id, 0);
    assert_eq!(info.fd, 27);
    peer.await.unwrap();
}

#[tokio::test]
async fn getfd_via_execute_with_fd() {
    let (client, mut qemu) = session().await;
    let (_read_end, write_end) = std::io::pipe().unwrap();
    let peer = tokio::spawn(async move {
        let (request, fds) = qemu.recv_with_fds().await;
        assert_eq!(request["arguments"], json!({"fdname": "vhostfd-0"}));
        assert_eq!(fds.len(), 1);
        qemu.send_line(r#"{"return": {}, "id": 1}"#).await;
    });

    client
        .execute(GetFd::new("vhostfd-0"))
        .with_fd(write_end.as_fd())
        .await
        .unwrap();

    peer.await.unwrap();
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn set_password_never_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: the reader task logs on this
    // thread too.
    let _default = tracing::subscriber::set_default(subscriber);
    let (client, mut qemu) = session().await;
    let peer = tokio::spawn(async move {
        assert_eq!(
            qemu.recv().await,
            json!({"execute": "set_password",
                   "arguments": {"protocol": "vnc", "password": "hunter2"}, "id": 1})
        );
        qemu.send_line(r#"{"return": {}, "id": 1}"#).await;
    });

    client
        .execute(SetPassword::new(DisplayProtocol::Vnc, "hunter2"))
        .await
        .unwrap();
    peer.await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("set_password"), "{logs}");
    assert!(logs.contains("<redacted>"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}
