//! `hub::groups::init`, which builds a thread's MLS group from the creator's
//! GroupInfo and ratchet tree (the `init_group` request). Input, in sections
//! (see `ketenhub_fuzz::sections`): identity CA PEM, thread id, caller `OIN/worker`, GroupInfo,
//! ratchet tree. The checks must refuse anything else than a verified epoch-0
//! group of this thread with the caller alone, with a typed error; what they
//! accept must be a state the hub can load again.
#![no_main]

use ketenhub_fuzz::{group_input, GroupInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(GroupInput { identities, thread, caller, group_info, tree, .. }) = group_input(data) else {
        return;
    };
    let Ok(state) = hub::groups::init(&identities, thread, &caller, group_info, tree) else {
        return;
    };
    assert_eq!(hub::groups::epoch(&state, thread).expect("an accepted group loads"), 0);
    assert_eq!(hub::groups::devices_of(&state, thread).expect("an accepted group loads"), [caller]);
});
