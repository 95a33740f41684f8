//! The handover packet's JSON reader, as a case system feeds it to the SDK:
//! `HandoverPacket::from_json`, then `validate`. Neither may panic; a packet
//! that reads must read back equal from its own JSON, so what the sender
//! validated is what the receiver gets.
#![no_main]

use ketenhub_sdk::packet::{Date, HandoverPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = HandoverPacket::from_json(text) else {
        return;
    };
    // The day the seeds' example packet was made for (`fuzz-seeds`), so its
    // dates stay valid and validation runs past them.
    let today = Date::new(2026, 3, 16).expect("a real date");
    let _ = packet.validate(today);
    let back = HandoverPacket::from_json(&packet.to_json()).expect("a packet reads back from its own JSON");
    assert_eq!(back, packet);
});
