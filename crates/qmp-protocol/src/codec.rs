//! Framing: QMP messages are JSON objects, one per line.
//!
//! QEMU ends lines with `\r\n`; [`LinesCodec`] strips the `\r`. The line
//! length is bounded so a broken peer cannot make us buffer without limit.
//! Unlike a bare `LinesCodec`, a connection that ends in the middle of a line
//! is an error, not a last short line.

use std::io;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use crate::error::ProtocolError;

/// Why the framing layer stopped.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// Reading the socket failed.
    Io(io::Error),
    /// The stream ended after part of a line.
    Truncated,
    /// The peer sent something that cannot be framed.
    Protocol(ProtocolError),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// A line decoder with a maximum line length.
#[derive(Debug)]
pub(crate) struct QmpCodec {
    lines: LinesCodec,
    max: usize,
}

impl QmpCodec {
    pub(crate) fn new(max_line_length: usize) -> Self {
        QmpCodec {
            lines: LinesCodec::new_with_max_length(max_line_length),
            max: max_line_length,
        }
    }

    fn map_err(&self, e: LinesCodecError) -> FrameError {
        match e {
            LinesCodecError::MaxLineLengthExceeded => {
                FrameError::Protocol(ProtocolError::LineTooLong { max: self.max })
            }
            // LinesCodec reports invalid UTF-8 as an InvalidData I/O error; a
            // socket read never fails with that kind.
            LinesCodecError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                FrameError::Protocol(ProtocolError::InvalidUtf8)
            }
            LinesCodecError::Io(e) => FrameError::Io(e),
        }
    }
}

impl Decoder for QmpCodec {
    type Item = String;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, FrameError> {
        self.lines.decode(buf).map_err(|e| self.map_err(e))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>, FrameError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            buf.clear();
            Ok(None)
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut QmpCodec, buf: &mut BytesMut) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = codec.decode(buf).unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn message_split_across_reads_is_one_line() {
        let mut codec = QmpCodec::new(1024);
        let mut buf = BytesMut::from(&b"{\"return\": "[..]);
        assert_eq!(decode_all(&mut codec, &mut buf), Vec::<String>::new());
        buf.extend_from_slice(b"{}, \"id\": 1}\r\n");
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec!["{\"return\": {}, \"id\": 1}".to_owned()]
        );
    }

    #[test]
    fn two_messages_in_one_read_are_two_lines() {
        let mut codec = QmpCodec::new(1024);
        let mut buf =
            BytesMut::from(&b"{\"event\": \"STOP\"}\r\n{\"return\": {}, \"id\": 2}\r\n"[..]);
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![
                "{\"event\": \"STOP\"}".to_owned(),
                "{\"return\": {}, \"id\": 2}".to_owned()
            ]
        );
    }

    #[test]
    fn over_long_line_is_a_protocol_error() {
        let mut codec = QmpCodec::new(8);
        let mut buf = BytesMut::from(&b"{\"return\": {}}\r\n"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Protocol(ProtocolError::LineTooLong { max: 8 })
        ));
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        let mut codec = QmpCodec::new(64);
        let mut buf = BytesMut::from(&b"{\"event\": \"\xff\"}\n"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Protocol(ProtocolError::InvalidUtf8)
        ));
    }

    #[test]
    fn eof_mid_line_is_truncated() {
        let mut codec = QmpCodec::new(64);
        let mut buf = BytesMut::from(&b"{\"retu"[..]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
    }

    #[test]
    fn eof_after_complete_line_is_clean() {
        let mut codec = QmpCodec::new(64);
        let mut buf = BytesMut::from(&b"{\"return\": {}}\r\n\r\n"[..]);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap(),
            Some("{\"return\": {}}".to_owned())
        );
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(String::new()));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }
}
