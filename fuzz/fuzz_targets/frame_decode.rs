//! What the hub's connection does with a binary WebSocket message: decode it as
//! a `ClientFrame`. Any bytes must give a frame or a `DecodeError`, never a
//! panic; a frame that decodes must survive a round trip unchanged, since the
//! SDK encodes with the same types and a lossy decoder would let the hub act on
//! something other than what the client meant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::ClientFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = wire::decode::<ClientFrame>(data) else {
        return;
    };
    let again = wire::decode::<ClientFrame>(&wire::encode(&frame)).expect("a decoded frame re-encodes decodably");
    assert_eq!(again, frame);
});
