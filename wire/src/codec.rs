//! CBOR encoding and decoding of frames.
//!
//! Decoding never panics on peer input: every failure becomes a [`DecodeError`]
//! that the receiver turns into a typed error frame.
//!
//! Frames from a peer go through [`decode_frame`], which is exactly as strict as
//! the CDDL in `PROTOCOL.md`: a frame is accepted only if encoding what was
//! decoded gives back the same CBOR data item (map keys in any order, integers
//! in any width). serde alone is lenient where the document is not: it skips
//! unknown keys, reads a struct from an array, and `uuid` reads a UUID from text
//! in any spelling. Comparing with the canonical encoding refuses all of these
//! with one rule, and cannot drift from the types, because the types define it.
//! [`decode`] keeps serde's tolerance for the hub's own stored records, which
//! may predate a field added with a default.

use ciborium::Value;
use serde::{de::DeserializeOwned, Serialize};

use crate::RequestId;

/// Why a received frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {message}")]
pub struct DecodeError {
    message: String,
    id: Option<RequestId>,
}

impl DecodeError {
    fn new(message: impl Into<String>, id: Option<RequestId>) -> Self {
        Self { message: message.into(), id }
    }

    /// The frame's `id` when it could be read (a top-level map with an
    /// unsigned integer under `id`), so that the answer names the request.
    pub fn request_id(&self) -> Option<RequestId> {
        self.id
    }
}

/// Encodes a frame as CBOR.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and every frame type serialises.
    ciborium::into_writer(frame, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes one CBOR data item, refusing trailing bytes. Tolerant in what serde
/// tolerates; for frames from a peer use [`decode_frame`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|e| DecodeError::new(e.to_string(), None))?;
    if !reader.is_empty() {
        return Err(DecodeError::new(format!("{} trailing bytes after the frame", reader.len()), None));
    }
    Ok(value)
}

/// Decodes a frame from a peer, refusing everything `PROTOCOL.md` calls
/// malformed: not CBOR, trailing bytes, an unknown key, a missing key, an array
/// in place of a map, a text UUID, a value of the wrong CBOR type.
pub fn decode_frame<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    // Peers that encode as the hub does send exactly the canonical bytes, and
    // then the frame is accepted without the item-by-item comparison, which
    // copies every payload three times on the path of every message. Anything
    // else, well-formed or not, takes the comparison and its precise error.
    if let Ok(frame) = decode::<T>(bytes) {
        if encode(&frame) == bytes {
            return Ok(frame);
        }
    }
    decode_frame_by_items(bytes)
}

fn decode_frame_by_items<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value: Value = decode(bytes)?;
    let id = readable_id(&value);
    let frame: T = value.deserialized().map_err(|e| DecodeError::new(e.to_string(), id))?;
    let canonical = Value::serialized(&frame).map_err(|e| DecodeError::new(e.to_string(), id))?;
    match difference(&value, &canonical, "frame") {
        None => Ok(frame),
        Some(why) => Err(DecodeError::new(why, id)),
    }
}

fn readable_id(value: &Value) -> Option<RequestId> {
    let Value::Map(entries) = value else { return None };
    entries
        .iter()
        .find(|(key, _)| key.as_text() == Some("id"))
        .and_then(|(_, id)| id.as_integer())
        .and_then(|id| u64::try_from(id).ok())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown item",
    }
}

/// Where `got` (as received) differs from `want` (the canonical encoding of
/// what was decoded from it), as a message naming the path.
fn difference(got: &Value, want: &Value, path: &str) -> Option<String> {
    match (got, want) {
        (Value::Map(got), Value::Map(want)) => {
            if let Some((key, _)) = got.iter().find(|(key, _)| !want.iter().any(|(k, _)| k == key)) {
                return Some(format!("{path}: unknown key {}", describe_key(key)));
            }
            if let Some((key, _)) = want.iter().find(|(key, _)| !got.iter().any(|(k, _)| k == key)) {
                return Some(format!("{path}: missing key {}", describe_key(key)));
            }
            want.iter().find_map(|(key, w)| {
                let (_, g) = got.iter().find(|(k, _)| k == key)?;
                difference(g, w, &format!("{path}.{}", key.as_text().unwrap_or("?")))
            })
        }
        (Value::Array(got), Value::Array(want)) => {
            if got.len() != want.len() {
                return Some(format!("{path}: {} elements where {} were read", got.len(), want.len()));
            }
            got.iter().zip(want).enumerate().find_map(|(i, (g, w))| difference(g, w, &format!("{path}[{i}]")))
        }
        (Value::Tag(..), _) if !matches!(want, Value::Tag(..)) => Some(format!("{path}: a tag is not allowed here")),
        _ if std::mem::discriminant(got) != std::mem::discriminant(want) => {
            Some(format!("{path}: {} where the protocol has {}", kind(got), kind(want)))
        }
        _ if got != want => Some(format!("{path}: not in the protocol's encoding")),
        _ => None,
    }
}

fn describe_key(key: &Value) -> String {
    match key.as_text() {
        Some(text) => format!("\"{text}\""),
        None => kind(key).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientFrame, Request, ThreadId};

    fn to_bytes(value: &Value) -> Vec<u8> {
        encode(value)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn list_members(thread: Value) -> Value {
        Value::Map(vec![
            (text("type"), text("request")),
            (text("id"), Value::Integer(7.into())),
            (text("request"), Value::Map(vec![(text("op"), text("list_members")), (text("thread"), thread)])),
        ])
    }

    #[test]
    fn a_canonical_frame_decodes_in_any_key_order() {
        let thread = ThreadId::random();
        let Value::Map(mut entries) = list_members(Value::Bytes(thread.0.as_bytes().to_vec())) else { unreachable!() };
        entries.reverse();
        let frame: ClientFrame = decode_frame(&to_bytes(&Value::Map(entries))).unwrap();
        assert_eq!(frame, ClientFrame::Request { id: 7, request: Request::ListMembers { thread } });
    }

    #[test]
    fn an_extra_key_is_malformed_with_the_id() {
        let thread = ThreadId::random();
        let Value::Map(mut entries) = list_members(Value::Bytes(thread.0.as_bytes().to_vec())) else { unreachable!() };
        entries.push((text("extra"), Value::Bool(true)));
        let error = decode_frame::<ClientFrame>(&to_bytes(&Value::Map(entries))).unwrap_err();
        assert_eq!(error.request_id(), Some(7));
        assert!(error.to_string().contains("unknown key \"extra\""), "{error}");
    }

    #[test]
    fn an_array_in_place_of_a_map_is_malformed() {
        let thread = ThreadId::random();
        let inner = Value::Array(vec![text("list_members"), Value::Bytes(thread.0.as_bytes().to_vec())]);
        let frame = Value::Map(vec![
            (text("type"), text("request")),
            (text("id"), Value::Integer(8.into())),
            (text("request"), inner),
        ]);
        let error = decode_frame::<ClientFrame>(&to_bytes(&frame)).unwrap_err();
        assert_eq!(error.request_id(), Some(8));
        let whole =
            Value::Array(vec![text("ack"), Value::Bytes(thread.0.as_bytes().to_vec()), Value::Integer(1.into())]);
        let error = decode_frame::<ClientFrame>(&to_bytes(&whole)).unwrap_err();
        assert_eq!(error.request_id(), None);
    }

    #[test]
    fn a_text_uuid_in_any_spelling_is_malformed() {
        let thread = ThreadId::random();
        for spelling in [thread.0.simple().to_string(), thread.0.to_string(), thread.0.urn().to_string()] {
            let error = decode_frame::<ClientFrame>(&to_bytes(&list_members(text(&spelling)))).unwrap_err();
            assert_eq!(error.request_id(), Some(7), "{spelling}");
        }
    }

    #[test]
    fn a_missing_optional_key_and_a_null_for_an_absent_one_are_malformed() {
        // `reason` is `tstr / null`: the key must be there.
        let thread = Value::Bytes(ThreadId::random().0.as_bytes().to_vec());
        let answer = Value::Map(vec![
            (text("type"), text("request")),
            (text("id"), Value::Integer(9.into())),
            (
                text("request"),
                Value::Map(vec![
                    (text("op"), text("answer_offer")),
                    (text("thread"), thread.clone()),
                    (text("offer"), Value::Integer(1.into())),
                    (text("accept"), Value::Bool(true)),
                ]),
            ),
        ]);
        assert!(decode_frame::<ClientFrame>(&to_bytes(&answer)).is_err());
        // `welcome` is `? bstr`: absent, never null.
        let commit = Value::Map(vec![
            (text("type"), text("request")),
            (text("id"), Value::Integer(10.into())),
            (
                text("request"),
                Value::Map(vec![
                    (text("op"), text("commit")),
                    (text("thread"), thread),
                    (text("commit"), Value::Bytes(vec![1])),
                    (text("welcome"), Value::Null),
                ]),
            ),
        ]);
        assert!(decode_frame::<ClientFrame>(&to_bytes(&commit)).is_err());
    }

    #[test]
    fn bytes_as_an_array_of_integers_are_malformed() {
        let thread = ThreadId::random();
        let as_array = Value::Array(thread.0.as_bytes().iter().map(|b| Value::Integer((*b).into())).collect());
        assert!(decode_frame::<ClientFrame>(&to_bytes(&list_members(as_array))).is_err());
    }

    #[test]
    fn an_integer_in_a_wider_width_decodes_as_the_canonical_one() {
        let thread = ThreadId::random();
        let canonical = to_bytes(&list_members(Value::Bytes(thread.0.as_bytes().to_vec())));
        // `id` 7 is the one-byte head 0x07; as 0x18 0x07 it is the same integer in two bytes.
        let at = canonical.windows(3).position(|w| w == [0x62, b'i', b'd']).unwrap() + 3;
        assert_eq!(canonical[at], 0x07);
        let mut wider = canonical.clone();
        wider.splice(at..=at, [0x18, 0x07]);
        let want = ClientFrame::Request { id: 7, request: Request::ListMembers { thread } };
        assert_eq!(decode_frame::<ClientFrame>(&canonical).unwrap(), want);
        assert_eq!(decode_frame::<ClientFrame>(&wider).unwrap(), want);
    }

    #[test]
    fn an_unreadable_id_is_not_guessed() {
        let frame = Value::Map(vec![(text("type"), text("request")), (text("id"), text("7"))]);
        assert_eq!(decode_frame::<ClientFrame>(&to_bytes(&frame)).unwrap_err().request_id(), None);
        assert_eq!(decode_frame::<ClientFrame>(&[0xff]).unwrap_err().request_id(), None);
    }
}
