//! `hub::groups::check_commit`, which verifies a commit against a thread's
//! group and says whom it adds and removes (the `commit` and `rejoin` requests). Input, in
//! sections (see `ketenhub_fuzz::sections`): identity CA PEM, thread id, caller `OIN/worker`,
//! GroupInfo, ratchet tree, then commits applied in order, as the hub applies
//! one commit per epoch. The seeds are a real group and real commits, so most
//! mutations reach the commit checks; what the checks accept must agree with
//! the state they return.
#![no_main]

use hub::groups::CommitKind;
use ketenhub_fuzz::{group_input, GroupInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(GroupInput { identities, thread, caller, group_info, tree, rest: commits }) = group_input(data) else {
        return;
    };
    let Ok(mut state) = hub::groups::init(&identities, thread, &caller, group_info, tree) else {
        return;
    };
    for commit in commits {
        let before = hub::groups::epoch(&state, thread).expect("a checked group loads");
        // Both ways in: a member's commit and a device's rejoin.
        let checked = [CommitKind::Member, CommitKind::Rejoin]
            .into_iter()
            .find_map(|kind| hub::groups::check_commit(&identities, &state, thread, &caller, commit, kind).ok());
        let Some(checked) = checked else {
            continue;
        };
        assert_eq!(checked.epoch, before + 1, "one commit moves the group one epoch");
        assert_eq!(hub::groups::epoch(&checked.state, thread).expect("a checked group loads"), checked.epoch);
        let devices = hub::groups::devices_of(&checked.state, thread).expect("a checked group loads");
        for member in &checked.added {
            assert!(devices.contains(member), "{member} was added but has no device");
        }
        for member in &checked.removed {
            assert!(checked.removes_devices_of.contains(member), "{member} removed without a removed device");
            assert!(!devices.contains(member), "{member} removed but still has a device");
        }
        state = checked.state;
    }
});
