//! One desk over HTTP, without a browser: its door (token, session cookie,
//! CSRF, Host and Content-Security-Policy) and its memory (a thread shows its
//! history after a restart, because the desk keeps what it acknowledged).
//!
//! A real hub on loopback TLS with the dev PKI and sled, `ketenhub-desk serve`
//! as a process (killed with SIGKILL and started again on the same state
//! directory), and plain HTTP/1.1 requests on a socket.

use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use hub::config::Limits;
use hub::devhub::DevHub;
use ketenhub_sdk::Grounds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// An HTTP answer: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `ketenhub-desk serve` as a process: its address and the URL it printed.
struct Desk {
    child: Child,
    addr: SocketAddr,
    url: String,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(hub: &DevHub, dir: &std::path::Path, slug: &str) -> Desk {
    let pki = hub.pki_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ketenhub-desk"))
        .args(["serve", "--hub", &hub.url(), "--listen", "127.0.0.1:0"])
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join(format!("{slug}.crt")))
        .arg("--key")
        .arg(pki.join(format!("{slug}.key")))
        .arg("--state")
        .arg(dir.join("desk-state"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("ketenhub-desk serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its first line");
    let url = line.split_whitespace().nth(2).expect("desk WORKER URL").to_owned();
    let addr = url.trim_start_matches("http://").split('/').next().and_then(|a| a.parse().ok()).expect("an address");
    Desk { child, addr, url }
}

async fn http(desk: &Desk, request: &str) -> anyhow::Result<Answer> {
    let mut socket = tokio::net::TcpStream::connect(desk.addr).await?;
    socket.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer { status, headers, body: body.to_owned() })
}

fn get(desk: &Desk, path: &str, cookie: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n", desk.addr)
}

fn post(desk: &Desk, path: &str, cookie: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        desk.addr,
        body.len()
    )
}

/// Signs in with the printed URL and returns the session cookie.
async fn sign_in(desk: &Desk) -> anyhow::Result<String> {
    let path = desk.url.split_once(&desk.addr.to_string()).map(|(_, p)| p.to_owned()).unwrap_or_default();
    let answer = http(desk, &get(desk, &path, "")).await?;
    assert_eq!(answer.status, 303, "the token opens the desk");
    let cookie = answer.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

/// Waits until the thread's page shows `text`.
async fn shows(desk: &Desk, page: &str, cookie: &str, text: &str) -> anyhow::Result<Answer> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = http(desk, &get(desk, page, cookie)).await?;
        if answer.body.contains(text) {
            return Ok(answer);
        }
        anyhow::ensure!(Instant::now() < deadline, "{page} never showed {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a case from the desk's "new case" button; returns its page's path.
async fn new_case(desk: &Desk, cookie: &str) -> anyhow::Result<String> {
    let cases = shows(desk, "/cases", cookie, "_csrf").await?;
    let created = http(desk, &post(desk, "/cases", cookie, &format!("_csrf={}", csrf(&cases.body)))).await?;
    Ok(created.header("location").ok_or_else(|| anyhow::anyhow!("no redirect to the new case"))?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_guards_its_door_and_keeps_a_threads_history_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "lt-woerden-caseworker");
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let lt = ketenhub_sdk::MemberId::new("00000001800000000002", "sanne.bakker")?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt, &Grounds::new("voluntary support", "consent")).await?;
    for text in ["eerste bericht", "tweede bericht", "derde bericht"] {
        vt.send_text(thread, text).await?;
    }

    // The door: no session, a wrong token, another Host, a POST without its CSRF token.
    let page = format!("/cases/{thread}");
    assert_eq!(http(&desk, &get(&desk, &page, "")).await?.status, 401, "no session");
    assert_eq!(http(&desk, &get(&desk, "/login?token=00", "")).await?.status, 401, "a wrong token");
    let cookie = sign_in(&desk).await?;
    let rebound = get(&desk, &page, &cookie).replace(&format!("Host: {}", desk.addr), "Host: evil.example");
    assert_eq!(http(&desk, &rebound).await?.status, 421, "another Host name");
    let forged = http(&desk, &post(&desk, &format!("{page}/messages"), &cookie, "text=hallo")).await?;
    assert_eq!(forged.status, 403, "a POST without the CSRF token");
    let wrong = http(&desk, &post(&desk, &format!("{page}/messages"), &cookie, "_csrf=00&text=hallo")).await?;
    assert_eq!(wrong.status, 403, "a POST with a wrong CSRF token");

    let shown = shows(&desk, &page, &cookie, "derde bericht").await?;
    assert_eq!(shown.status, 200);
    let csp = shown.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(!shown.body.contains("<script>") && !shown.body.contains(" style="), "no inline script or style");
    assert!(shown.body.contains("derde bericht"));
    let bad_case = http(&desk, &get(&desk, "/cases/not-a-case", &cookie)).await?;
    assert_eq!(bad_case.status, 404, "bad input is a typed answer, not a panic");

    // Killed and started again: the hub delivers nothing acknowledged again; the desk shows it from its store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(desk);
    let desk = serve(&hub, dir.path(), "lt-woerden-caseworker");
    let cookie = sign_in(&desk).await?;
    let shown = http(&desk, &get(&desk, &page, &cookie)).await?;
    for text in ["eerste bericht", "tweede bericht", "derde bericht"] {
        assert_eq!(shown.body.matches(text).count(), 1, "{text} is not shown once after the restart");
    }
    vt.send_text(thread, "na de herstart").await?;
    shows(&desk, &page, &cookie, "na de herstart").await?;
    drop(desk);
    vt.close().await;
    hub.stop().await
}

/// The CSRF token a page's forms carry.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"_csrf\" value=\"").map(|i| i + "name=\"_csrf\" value=\"".len()).expect("a CSRF field");
    body[at..].split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_accepts_and_then_cancels_an_offer_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "lt-woerden-caseworker");
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let offer = ketenhub_sdk::OfferRequest {
        to: "00000001800000000002".parse()?,
        to_worker: Some("sanne.bakker".into()),
        route: "vt-lt-referral".into(),
        legal_basis: "consent".into(),
        reason: "ondersteuning thuis".into(),
        justification: None,
        deadline_ms: hub::clock::now_ms() + 86_400_000,
    };
    vt.offer_handover(thread, offer).await?;

    let cookie = sign_in(&desk).await?;
    let inbox = shows(&desk, "/offers", &cookie, "ondersteuning thuis").await?;
    let token = csrf(&inbox.body);
    let accept = post(&desk, &format!("/cases/{thread}/offers/1/accept"), &cookie, &format!("_csrf={token}"));
    assert_eq!(http(&desk, &accept).await?.status, 303);
    let page = shows(&desk, &format!("/cases/{thread}"), &cookie, "/offers/1/cancel").await?;
    assert!(!page.body.contains("/offers/1/withdraw"), "only the sender withdraws");
    assert!(page.body.contains("data-offer-state=\"accepted\""), "the offer shows as accepted");
    assert!(!page.body.contains("/clocks/completion/done"), "only completing or cancelling stops that clock");
    let empty = post(&desk, &format!("/cases/{thread}/offers/1/cancel"), &cookie, &format!("_csrf={token}&reason="));
    assert_eq!(http(&desk, &empty).await?.status, 400, "a cancel needs a reason");
    let body = format!("_csrf={token}&reason=gezin+verhuist");
    assert_eq!(
        http(&desk, &post(&desk, &format!("/cases/{thread}/offers/1/cancel"), &cookie, &body)).await?.status,
        303
    );
    let ownership = vt.ownership(thread).await?;
    assert!(
        matches!(&ownership.offers[0].state, ketenhub_sdk::OfferState::Cancelled { reason, .. } if reason == "gezin verhuist")
    );
    assert_eq!(ownership.owner, vt.member_id());
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_consults_someone_until_an_end_date_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = hub::clock::Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), Limits::default(), clock.clone()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-caseworker");
    // Both devices are online, so the owner's device can add them to the group.
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let bram = hub.client("vt-utrecht-colleague").discard_events().connect().await?;
    let cookie = sign_in(&desk).await?;
    let cases = shows(&desk, "/cases", &cookie, "_csrf").await?;
    let created = http(&desk, &post(&desk, "/cases", &cookie, &format!("_csrf={}", csrf(&cases.body)))).await?;
    assert_eq!(created.status, 303);
    let case = created.header("location").expect("a redirect to the new case").to_owned();
    let page = shows(&desk, &case, &cookie, "name=\"role\"").await?;
    let token = csrf(&page.body);

    let form = |role: &str, until: &str| {
        format!("_csrf={token}&oin=00000001800000000002&worker=sanne.bakker&reason=gedragsadvies&legal_basis=consent&role={role}&until={until}")
    };
    let colleague = format!("_csrf={token}&oin=00000001800000000001&worker=bram.kok&reason=tweede+werker&legal_basis=consent&role=member&until=");
    assert_eq!(http(&desk, &post(&desk, &format!("{case}/members"), &cookie, &colleague)).await?.status, 303);
    let missing = http(&desk, &post(&desk, &format!("{case}/members"), &cookie, &form("consultant", ""))).await?;
    assert_eq!(missing.status, 400, "a participant needs an end date");
    let unknown = http(&desk, &post(&desk, &format!("{case}/members"), &cookie, &form("boss", "2030-01-01"))).await?;
    assert_eq!(unknown.status, 400, "no such role");
    let last_day = ketenhub_sdk::report::date_time(hub::clock::now_ms() + 10 * 86_400_000)[..10].to_owned();
    let added = http(&desk, &post(&desk, &format!("{case}/members"), &cookie, &form("consultant", &last_day))).await?;
    assert_eq!(added.status, 303);
    let page = shows(&desk, &case, &cookie, "data-member=\"sanne.bakker\"").await?;
    let row = page
        .body
        .split("data-member=\"sanne.bakker\"")
        .nth(1)
        .and_then(|r| r.split("</li>").next())
        .unwrap_or_default();
    assert!(row.contains("Consulent") && row.contains(&last_day), "the member list shows the role and end date: {row}");
    let thread: ketenhub_sdk::ThreadId = ketenhub_sdk::ThreadId(case.trim_start_matches("/cases/").parse()?);
    let ownership = lt.ownership(thread).await?;
    assert_eq!(ownership.participants.first().map(|p| p.role), Some(ketenhub_sdk::ParticipantRole::Consultant));

    // Past the last day the hub ends the membership, and the owner's desk removes the devices by itself.
    clock.advance(11 * 86_400_000);
    hub.hub().fire_deadlines().await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let ownership = bram.ownership(thread).await?;
        if ownership.participants.is_empty() && ownership.removal_due.is_empty() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the owner's desk never removed the devices: {ownership:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!bram.members(thread).await?.contains(&lt.member_id()));
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_closes_and_reopens_a_case_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-caseworker");
    let cookie = sign_in(&desk).await?;
    let case = new_case(&desk, &cookie).await?;
    let page = shows(&desk, &case, &cookie, "id=\"close-form\"").await?;
    let token = csrf(&page.body);
    assert!(page.body.contains("value=\"safe-at-home\""), "the outcomes come from the policy");

    let closing = format!("_csrf={token}&outcome=safe-at-home&reason=het+gezin+is+veilig");
    assert_eq!(http(&desk, &post(&desk, &format!("{case}/close"), &cookie, &closing)).await?.status, 303);
    let page = shows(&desk, &case, &cookie, "id=\"closed-notice\"").await?;
    assert!(!page.body.contains("id=\"compose-form\""), "nobody writes in a closed case");
    assert!(page.body.contains("id=\"reopen-form\"") && !page.body.contains("id=\"close-form\""));
    let reopening = format!("_csrf={token}&reason=nieuwe+melding");
    assert_eq!(http(&desk, &post(&desk, &format!("{case}/reopen"), &cookie, &reopening)).await?.status, 303);
    let page = shows(&desk, &case, &cookie, "id=\"compose-form\"").await?;
    assert!(!page.body.contains("id=\"closed-notice\""), "reopened");
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_asks_a_school_in_a_side_thread_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-caseworker");
    let school = hub.client("school-mentor").connect().await?;
    let mut school_events = school.events().expect("events");
    let cookie = sign_in(&desk).await?;
    let case = new_case(&desk, &cookie).await?;
    let page = shows(&desk, &case, &cookie, "id=\"side-form\"").await?;
    let token = csrf(&page.body);

    // The school is refused on the case itself, with the rule shown.
    let add = |path: &str| {
        let body = format!(
            "_csrf={token}&oin=00000001800000000006&worker=ib.deregenboog&reason=aanwezigheid&legal_basis=consent"
        );
        post(&desk, &format!("{path}/members"), &cookie, &body)
    };
    let refused = http(&desk, &add(&case)).await?;
    assert!(
        refused.header("location").is_some_and(|l| l.contains("limited-recipient")),
        "{:?}",
        refused.header("location")
    );

    // A side thread, with the school on it alone.
    let opening = format!("_csrf={token}&purpose=aanwezigheid+op+school");
    let opened = http(&desk, &post(&desk, &format!("{case}/side"), &cookie, &opening)).await?;
    let side = opened.header("location").expect("a redirect to the side thread").to_owned();
    assert_ne!(side, case);
    let page = shows(&desk, &side, &cookie, "aanwezigheid op school").await?;
    assert!(page.body.contains(&format!("href=\"{case}\"")), "the side thread links to its case");
    assert!(!page.body.contains("id=\"close-form\"") && !page.body.contains("name=\"role\""));
    assert_eq!(http(&desk, &add(&side)).await?.status, 303);
    shows(&desk, &side, &cookie, "data-member=\"ib.deregenboog\"").await?;
    let text = format!("_csrf={token}&text=Hoe+is+de+aanwezigheid%3F");
    assert_eq!(http(&desk, &post(&desk, &format!("{side}/messages"), &cookie, &text)).await?.status, 303);
    let question = tokio::time::timeout(WAIT, async {
        loop {
            match futures_util::StreamExt::next(&mut school_events).await {
                Some(ketenhub_sdk::Event::Message(m)) => return Some(m),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await?
    .expect("the question reaches the school");
    assert_eq!(question.content.as_bytes(), "Hoe is de aanwezigheid?".as_bytes());
    school.send_text(question.thread, "Drie keer afwezig.").await?;
    shows(&desk, &side, &cookie, "Drie keer afwezig.").await?;
    shows(&desk, "/cases", &cookie, "data-side=").await?;
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_officer_marks_a_share_without_consent_as_reviewed_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-privacy");
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let offer = ketenhub_sdk::OfferRequest {
        to: "00000001800000000002".parse()?,
        to_worker: None,
        route: "vt-lt-referral".into(),
        legal_basis: "vt-safety".into(),
        reason: "veiligheid van de kinderen".into(),
        justification: Some("acuut gevaar, ouders weigeren contact".into()),
        deadline_ms: hub::clock::now_ms() + 86_400_000,
    };
    vt.offer_handover(thread, offer).await?;

    let cookie = sign_in(&desk).await?;
    let queue = shows(&desk, "/review", &cookie, "acuut gevaar, ouders weigeren contact").await?;
    let open = queue.body.split("<h2>").nth(1).unwrap_or_default();
    assert!(open.contains("Nog te beoordelen (1)") && open.contains(&thread.to_string()), "{open}");
    let entry: u64 = open
        .split("action=\"/review/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("a review form names its entry");
    let token = csrf(&queue.body);
    let blank = post(&desk, &format!("/review/{entry}"), &cookie, &format!("_csrf={token}&note=+"));
    assert_eq!(http(&desk, &blank).await?.status, 400, "a review needs a note");
    let forged = post(&desk, &format!("/review/{entry}"), &cookie, "note=goed");
    assert_eq!(http(&desk, &forged).await?.status, 403, "a review without the CSRF token is refused");
    let body = format!("_csrf={token}&note=onderbouwing+volstaat");
    assert_eq!(http(&desk, &post(&desk, &format!("/review/{entry}"), &cookie, &body)).await?.status, 303);

    let page = shows(&desk, "/review", &cookie, "onderbouwing volstaat").await?;
    assert!(page.body.contains("Nog te beoordelen (0)") && page.body.contains("Beoordeeld (1)"), "{}", page.body);
    // The review is in the audit log, on the case, with the note as its purpose.
    let mut reviews = Vec::new();
    hub::audit::scan(hub.store().as_ref(), |e| {
        if e.record.action == ketenhub_sdk::AuditAction::Review {
            reviews.push((e.record.case, e.record.purpose.clone(), e.record.outcome));
        }
        true
    })?;
    assert!(
        reviews.contains(&(Some(thread), Some("onderbouwing volstaat".into()), ketenhub_sdk::AuditOutcome::Allowed)),
        "{reviews:?}"
    );

    // The family's version of the access report: plain Dutch, the share with its reason, nobody's id.
    let report = shows(&desk, &format!("/audit/report?case={thread}"), &cookie, "/audit/report/family").await?;
    assert!(report.body.contains(&format!("href=\"/audit/report/family?case={thread}\"")));
    let family = http(&desk, &get(&desk, &format!("/audit/report/family?case={thread}"), &cookie)).await?;
    assert_eq!(family.status, 200);
    for expected in [
        "Wie heeft uw gegevens gezien",
        "Veilig Thuis Utrecht: medewerkers (1 persoon)",
        "Bood de zaak aan een andere organisatie aan",
        "gaf uw gegevens aan Lokaal team Woerden. Grond: door Veilig Thuis, om onveiligheid te stoppen",
        "Reden: veiligheid van de kinderen. acuut gevaar, ouders weigeren contact.",
        "Veilig Thuis Utrecht: functionaris gegevensbescherming",
    ] {
        assert!(family.body.contains(expected), "{expected:?} missing in:\n{}", family.body);
    }
    for hidden in ["anna.devries", "fenna.jansen", "00000001800000000002"] {
        assert!(!family.body.contains(hidden), "{hidden} in the family's report");
    }
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_shows_which_members_have_each_message_on_a_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "lt-woerden-caseworker");
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let state = tempfile::tempdir()?;
    let away = || hub.client("lt-oudewater-caseworker").state_dir(state.path());
    let oudewater = away().discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let consent = Grounds::new("voluntary support", "consent");
    vt.add_member(thread, ketenhub_sdk::MemberId::new("00000001800000000002", "sanne.bakker")?, &consent).await?;
    vt.add_member(thread, oudewater.member_id(), &consent).await?;
    let deadline = Instant::now() + WAIT;
    while oudewater.epoch(thread) != vt.epoch(thread) {
        anyhow::ensure!(Instant::now() < deadline, "Oudewater never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    oudewater.close().await;
    drop(oudewater);

    // The desk has VT's message; Oudewater's only device is away.
    vt.send_text(thread, "wie leest mee").await?;
    let cookie = sign_in(&desk).await?;
    let page = format!("/cases/{thread}");
    let waiting = "Nog niet ontvangen door: Lokaal team Oudewater (joris.smit)";
    let shown = shows(&desk, &page, &cookie, waiting).await?;
    assert!(shown.body.contains("Ontvangen door: Lokaal team Woerden (sanne.bakker)"), "{}", shown.body);
    assert_eq!(shown.body.matches("class=\"delivery\"").count(), 1, "only the message has a delivery line");

    // Oudewater's device comes back, processes the message and acknowledges
    // it: nobody is waiting any more.
    let oudewater = away().connect().await?;
    let mut events = oudewater.events().expect("events");
    let deadline = Instant::now() + WAIT;
    let seq = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, futures_util::StreamExt::next(&mut events)).await {
            Ok(Some(ketenhub_sdk::Event::Message(m))) if m.thread == thread => break m.seq,
            Ok(Some(_)) => continue,
            other => anyhow::bail!("Oudewater never read the message: {other:?}"),
        }
    };
    oudewater.ack(thread, seq).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = http(&desk, &get(&desk, &page, &cookie)).await?.body;
        // Still a member, so off the waiting list means on the received one.
        if !body.contains("Nog niet ontvangen door") && body.contains("class=\"delivered\"") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the desk never showed Oudewater's delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    oudewater.close().await;
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_lead_takes_over_a_colleagues_case_from_the_desk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let lead = serve(&hub, dir.path(), "vt-utrecht-teamlead");
    let anna = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = anna.create_thread().await?;
    let cookie = sign_in(&lead).await?;
    let cases = shows(&lead, "/cases", &cookie, "id=\"take-over-form\"").await?;
    let token = csrf(&cases.body);
    assert!(!cases.body.contains(&thread.to_string()[..8]), "the lead is not on the case yet");

    // Without a reason, or for a case that does not exist, nothing changes.
    let take = |case: String, reason: &str| format!("_csrf={token}&case={case}&reason={reason}");
    let blank = http(&lead, &post(&lead, "/take-over", &cookie, &take(thread.to_string(), "+"))).await?;
    assert_eq!(blank.status, 400, "{}", blank.body);
    let unknown = take(wire::ThreadId::random().to_string(), "ziek");
    assert_eq!(http(&lead, &post(&lead, "/take-over", &cookie, &unknown)).await?.status, 404);
    assert_eq!(anna.ownership(thread).await?.owner, anna.member_id());

    let taken = http(&lead, &post(&lead, "/take-over", &cookie, &take(thread.to_string(), "anna+is+ziek"))).await?;
    assert_eq!(taken.status, 303, "{}", taken.body);
    assert_eq!(taken.header("location"), Some(format!("/cases/{thread}").as_str()));
    let page = shows(&lead, &format!("/cases/{thread}"), &cookie, "petra.vos").await?;
    assert_eq!(anna.ownership(thread).await?.owner.worker, "petra.vos", "{}", page.body);
    let listed = shows(&lead, "/cases", &cookie, &thread.to_string()[..8]).await?;
    assert!(listed.body.contains("badge-me"), "the lead's cases show it as its own");
    drop(lead);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_reassigns_a_case_to_a_colleague_whose_device_the_desk_then_brings_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-caseworker");
    let bram = hub.client("vt-utrecht-colleague").connect().await?;
    let mut bram_events = bram.events().expect("events");
    let cookie = sign_in(&desk).await?;
    let case = new_case(&desk, &cookie).await?;
    let page = shows(&desk, &case, &cookie, "id=\"reassign-form\"").await?;
    let token = csrf(&page.body);
    let thread = wire::ThreadId(case.trim_start_matches("/cases/").parse()?);

    let tomorrow =
        ketenhub_sdk::packet::Date::from_unix_ms(hub::clock::now_ms() + 2 * wire::calendar::DAY_MS).to_string();
    let form = |worker: &str, deadline: &str| {
        format!(
            "_csrf={token}&worker={worker}&reason=werkverdeling&legal_basis=consent&justification=&deadline={deadline}"
        )
    };
    let late = http(&desk, &post(&desk, &format!("{case}/reassign"), &cookie, &form("bram.kok", "2001-01-01"))).await?;
    assert_eq!(late.status, 400, "a deadline in the past is refused");
    // Offering the case to oneself is no reassignment: the hub's rule is shown at the form.
    let to_self =
        http(&desk, &post(&desk, &format!("{case}/reassign"), &cookie, &form("anna.devries", &tomorrow))).await?;
    let back = to_self.header("location").expect("back to the form").to_owned();
    let refused = shows(&desk, &back, &cookie, "id=\"reassign-refusal\"").await?;
    assert!(refused.body.contains("reassign-to-a-colleague"), "{}", refused.body);

    let made = http(&desk, &post(&desk, &format!("{case}/reassign"), &cookie, &form("bram.kok", &tomorrow))).await?;
    assert_eq!(made.status, 303);
    let ownership = bram.pending_offers().await?;
    let (_, offer) = ownership.iter().find(|(t, _)| *t == thread).expect("the colleague sees the offer");
    assert_eq!(offer.route, wire::handover::REASSIGNMENT_ROUTE);
    bram.accept_offer(thread, offer.id).await?;
    // The owner's desk brings the colleague's device into the case's group by itself.
    let joined = tokio::time::timeout(WAIT, async {
        loop {
            match futures_util::StreamExt::next(&mut bram_events).await {
                Some(ketenhub_sdk::Event::Joined { thread: t, .. }) if t == thread => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(joined, Ok(true), "the colleague's device never joined the case");
    shows(&desk, &case, &cookie, "data-offer-state=\"accepted\"").await?;
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_shares_earlier_messages_with_a_member_who_joined_later() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "vt-utrecht-caseworker");
    let sanne = hub.client("lt-woerden-caseworker").connect().await?;
    let mut sanne_events = sanne.events().expect("events");
    let cookie = sign_in(&desk).await?;
    let case = new_case(&desk, &cookie).await?;
    let page = shows(&desk, &case, &cookie, "id=\"compose-form\"").await?;
    let token = csrf(&page.body);
    let text = format!("_csrf={token}&text=vader+woont+sinds+maart+apart");
    assert_eq!(http(&desk, &post(&desk, &format!("{case}/messages"), &cookie, &text)).await?.status, 303);
    let add = format!(
        "_csrf={token}&oin=00000001800000000002&worker=sanne.bakker&reason=ondersteuning+thuis&legal_basis=consent"
    );
    assert_eq!(http(&desk, &post(&desk, &format!("{case}/members"), &cookie, &add)).await?.status, 303);

    let form = shows(&desk, &format!("{case}/share"), &cookie, "vader woont sinds maart apart").await?;
    let seq = form.body.split("name=\"seq\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a choice");
    let none = http(&desk, &post(&desk, &format!("{case}/share"), &cookie, &format!("_csrf={token}"))).await?;
    assert_eq!(none.status, 400, "a share of nothing is refused");
    // Sanne's device must be in the group before the share is sent, or it cannot read it.
    let joined = tokio::time::timeout(WAIT, async {
        while let Some(event) = futures_util::StreamExt::next(&mut sanne_events).await {
            if matches!(event, ketenhub_sdk::Event::Joined { .. }) {
                return true;
            }
        }
        false
    });
    assert_eq!(joined.await, Ok(true), "Sanne never joined");
    let shared =
        http(&desk, &post(&desk, &format!("{case}/share"), &cookie, &format!("_csrf={token}&seq={seq}"))).await?;
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert!(shared.body.contains("Gedeeld met: Lokaal team Woerden (sanne.bakker)"), "{}", shared.body);
    let received = tokio::time::timeout(WAIT, async {
        while let Some(event) = futures_util::StreamExt::next(&mut sanne_events).await {
            if let ketenhub_sdk::Event::Message(m) = event {
                if let ketenhub_sdk::Content::HistoryShare(share) = m.content {
                    return Some(share.items);
                }
            }
        }
        None
    })
    .await?
    .expect("the share");
    let texts: Vec<_> = received.iter().map(|i| i.content.clone()).collect();
    assert_eq!(texts, [ketenhub_sdk::Content::Text { text: "vader woont sinds maart apart".into() }]);
    drop(desk);
    hub.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_desk_prints_the_familys_summary_of_a_packet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), Limits::default()).await?;
    let desk = serve(&hub, dir.path(), "lt-woerden-caseworker");
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let lt = wire::MemberId { oin: "00000001800000000002".parse()?, worker: "sanne.bakker".into() };
    let cookie = sign_in(&desk).await?;
    shows(&desk, "/cases", &cookie, "_csrf").await?;
    vt.add_member(thread, lt, &ketenhub_sdk::Grounds::new("overdracht na onderzoek", "consent")).await?;
    vt.send_text(thread, "Eerst een bericht.").await?;
    let today = ketenhub_sdk::packet::Date::from_unix_ms(hub::clock::now_ms());
    vt.send_packet(thread, ketenhub_sdk::HandoverPacket::example(today), today).await?;

    let page = shows(&desk, &format!("/cases/{thread}"), &cookie, "/family-summary/").await?;
    let link = page.body.split("href=\"").find(|s| s.contains("/family-summary/")).and_then(|s| s.split('"').next());
    let link = link.ok_or_else(|| anyhow::anyhow!("no link to the family's summary"))?.to_owned();
    assert!(page.body.contains("Lotte de Vries") && page.body.contains("c2"), "the packet shows its consents");
    let summary = http(&desk, &get(&desk, &link, &cookie)).await?;
    assert_eq!(summary.status, 200);
    assert!(summary.body.contains("Uw contactpersoon is Sanne Bakker van Lokaal team Woerden"), "{}", summary.body);
    assert!(summary.body.contains("href=\"/assets/family.css\"") && !summary.body.contains("<style>"));
    assert!(summary.header("content-security-policy").is_some_and(|csp| csp.contains("style-src 'self'")));
    let style = http(&desk, &get(&desk, "/assets/family.css", &cookie)).await?;
    assert!(style.status == 200 && style.body.contains("@media print"));
    assert!(!page.body.contains("voldoet niet aan de regels"), "the sender's SDK checked this one");
    // A member's own software may send a packet that breaks the rules: the desk says so.
    let mut unchecked = ketenhub_sdk::HandoverPacket::example(today);
    unchecked.lawful_basis.consents.clear();
    vt.send_content(thread, ketenhub_sdk::Content::HandoverPacket(Box::new(unchecked))).await?;
    let warned = shows(&desk, &format!("/cases/{thread}"), &cookie, "voldoet niet aan de regels").await?;
    assert!(warned.body.contains("lawful_basis.consents"), "the warning names the field");
    // The text message is no packet; a seq past the thread is nothing.
    let text_seq = link.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or_default() - 1;
    for seq in [text_seq, 999] {
        let path = format!("/cases/{thread}/family-summary/{seq}");
        assert_eq!(http(&desk, &get(&desk, &path, &cookie)).await?.status, 404, "{path}");
    }
    drop(desk);
    hub.stop().await
}
