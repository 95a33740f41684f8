//! The need-to-know policy file, as `hub serve --policy` and SIGHUP read it:
//! `hub::policy::Policy::parse`. Any text must give a policy or a typed
//! `PolicyError`; a policy that parses must answer the hub's questions (the
//! role table, adding a member on a route) without panicking.
#![no_main]

use hub::policy::{Action, Grounds, Policy};
use libfuzzer_sys::fuzz_target;
use wire::{MemberId, Role};

const ROLES: [Role; 4] = [Role::Caseworker, Role::System, Role::PrivacyOfficer, Role::Admin];
const ACTIONS: [Action; 6] =
    [Action::CreateThread, Action::AddMember, Action::Send, Action::Read, Action::AuditQuery, Action::Handover];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    for role in ROLES {
        for action in ACTIONS {
            let _ = policy.role_allows(role, action);
        }
    }
    // The OINs of the example policy (deploy/policy.toml), which the seeds start from.
    let by = MemberId::new("00000001800000000001", "anna").expect("a valid member id");
    let member = MemberId::new("00000001800000000002", "piet").expect("a valid member id");
    for legal_basis in ["vt-safety", "consent", ""] {
        for side in [false, true] {
            let _ = policy.may_add(&by, &member, Grounds { reason: "onderzoek", legal_basis }, side);
        }
    }
    let _ = (policy.route_clocks("rvdk-gi-measure"), policy.background_days("rvdk-gi-measure", Some(3)));
    let _ = (policy.inboxes(), policy.is_urgent(u64::MAX, 0));
});
