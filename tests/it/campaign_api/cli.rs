//! `switchboard campaign …` (`sb_stack::campaign_cli`) driven against the served API: each
//! command once, and an API error coming back with its status, code and message.

use sb_stack::campaign_cli::{self, CampaignArgs};

use super::{ACME_KEY, numbers, spec, start};

/// The CLI creates, uploads, reads, pauses, resumes, lists and cancels through the API,
/// and an API error comes back with its code and message.
#[tokio::test]
async fn the_cli_drives_the_api() {
    let api = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec_file, csv_file) = (dir.path().join("spec.json"), dir.path().join("c.csv"));
    std::fs::write(&spec_file, spec("+15005550006").to_string()).unwrap();
    std::fs::write(&csv_file, numbers(0, 3) + "bad,x\n").unwrap();
    let run = |args: Vec<String>| {
        let base = api.base.clone();
        async move {
            use clap::{Args as _, FromArgMatches as _};
            let mut argv = vec!["campaign".to_owned(), "--api".into(), base];
            argv.extend(args);
            let matches =
                CampaignArgs::augment_args(clap::Command::new("campaign")).get_matches_from(argv);
            let parsed = CampaignArgs::from_arg_matches(&matches).unwrap();
            let mut out = Vec::new();
            let result = campaign_cli::run(parsed, ACME_KEY, &mut out).await;
            result.map(|()| String::from_utf8(out).unwrap())
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let out = run(s(&[
        "create",
        "--tenant",
        "acme",
        "--file",
        spec_file.to_str().unwrap(),
    ]))
    .await
    .unwrap();
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    let t = ["--tenant", "acme", "--campaign", id.as_str()];
    let out = run([s(&["upload"]), s(&t), s(&[csv_file.to_str().unwrap()])].concat())
        .await
        .unwrap();
    assert!(
        out.starts_with("queued 3, duplicates 0, rejected 1") && out.contains("line 5:"),
        "{out}"
    );
    assert!(
        run([s(&["pause"]), s(&t)].concat())
            .await
            .unwrap()
            .contains(": paused")
    );
    assert!(
        run([s(&["resume"]), s(&t)].concat())
            .await
            .unwrap()
            .contains(": active")
    );
    let out = run([s(&["contacts"]), s(&t), s(&["--state", "queued"])].concat())
        .await
        .unwrap();
    assert!(
        out.ends_with("3 contacts\n") && out.contains("+14150000001"),
        "{out}"
    );
    assert!(
        run([s(&["status"]), s(&t)].concat())
            .await
            .unwrap()
            .contains("queued 3")
    );
    let out = run([s(&["cancel"]), s(&t)].concat()).await.unwrap();
    assert!(out.starts_with("cancelled: 3 queued contacts"), "{out}");
    let e = run([s(&["resume"]), s(&t)].concat())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("409 conflict: the campaign is cancelled"),
        "{e}"
    );
}
