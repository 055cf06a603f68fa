//! Fuzzing of what QEMU sends: framing and message decoding (bounded here;
//! `cargo xtask fuzz` runs long).

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::codec::QmpCodec;
use crate::wire::parse_incoming;

fn seeds() -> Vec<Vec<u8>> {
    [
        r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#,
        r#"{"return": {}, "id": 1}"#,
        r#"{"return": [{"name": "query-status"}, {"name": "cont"}], "id": 2}"#,
        r#"{"error": {"class": "GenericError", "desc": "Device 'x' not found"}, "id": 3}"#,
        r#"{"event": "DEVICE_DELETED", "data": {"device": "disk-1", "path": "/machine/peripheral/disk-1"}, "timestamp": {"seconds": 1700000000, "microseconds": 5}}"#,
        r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1, "microseconds": 2}}"#,
        r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 7}"#,
    ]
    .iter()
    .map(|s| format!("{s}\r\n").into_bytes())
    .collect()
}

#[test]
fn fuzz_qmp_framing_and_messages() {
    testkit::fuzz("qmp-messages", &seeds(), |input| {
        let mut codec = QmpCodec::new(4096);
        // The first byte chooses how the stream is cut into reads.
        let step = usize::from(input.first().copied().unwrap_or(7)).max(1);
        let mut buf = BytesMut::new();
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Ok(Some(line)) = codec.decode(&mut buf) {
                let _ = parse_incoming(&line);
            }
        }
        if let Ok(Some(line)) = codec.decode_eof(&mut buf) {
            let _ = parse_incoming(&line);
        }
    });
}
