use super::*;
use sb_schemas::Mulaw;

pub(super) const LEAD: Duration = Duration::from_millis(60);
const GRACE: Duration = Duration::from_millis(1500);

/// A chunk of `frames` 20 ms frames, every byte `sentence * 16 + chunk + 1`.
fn chunk(sentence: u32, chunk: u32, frames: usize, last: bool, turn_last: bool) -> TtsChunk {
    let byte = (sentence * 16 + chunk + 1) as u8;
    TtsChunk {
        sentence,
        chunk,
        last,
        turn_last,
        payload: Mulaw(Bytes::from(vec![byte; frames * FRAME_BYTES])),
    }
}

/// What was sent and when (ms since `start`).
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub(super) media: Vec<(u64, Bytes, bool)>,
    pub(super) marks: Vec<(u64, String)>,
}

impl Sent {
    pub(super) fn audio(&self) -> Vec<u8> {
        self.media.iter().flat_map(|(_, a, _)| a.to_vec()).collect()
    }
    pub(super) fn mark_names(&self) -> Vec<&str> {
        self.marks.iter().map(|(_, name)| name.as_str()).collect()
    }
    fn late(&self) -> usize {
        self.media.iter().filter(|(_, _, late)| *late).count()
    }
}

/// A playback on paused time and what it sent; time zero is `start`.
pub(super) struct Rig {
    pub(super) start: Instant,
    pub(super) playback: Playback,
    pub(super) sent: Sent,
}

impl Rig {
    pub(super) fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            playback: Playback::new(LEAD, GRACE, start),
            sent: Sent::default(),
        }
    }

    /// Pushes `chunk` of `turn` now; the playback's verdict.
    pub(super) fn push(&mut self, turn: u32, chunk: TtsChunk) -> Result<usize, Dropped> {
        self.playback.push(turn, chunk, Instant::now())
    }

    /// Sends what falls due until `start + until`, sleeping between frames.
    pub(super) async fn play_until(&mut self, until: Duration) {
        self.play_to(self.start + until).await;
    }

    /// Sends what falls due during the next `span`.
    async fn play_for(&mut self, span: Duration) {
        self.play_to(Instant::now() + span).await;
    }

    async fn play_to(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            let at = now.duration_since(self.start).as_millis() as u64;
            while let Some(output) = self.playback.poll(now) {
                match output {
                    Output::Media { audio, late } => self.sent.media.push((at, audio, late)),
                    Output::Mark(name) => self.sent.marks.push((at, name)),
                }
            }
            match self.playback.next_wake() {
                Some(wake) if wake <= until => tokio::time::sleep_until(wake.max(now)).await,
                _ => break,
            }
        }
    }
}

/// Chunks arriving in any order play strictly in (sentence, chunk) order, each sentence
/// followed by its mark.
#[tokio::test(start_paused = true)]
async fn plays_out_of_order_chunks_in_order() {
    let mut rig = Rig::new();
    for (s, c, last, turn_last) in [
        (1, 1, true, true),
        (0, 1, true, false),
        (1, 0, false, false),
        (0, 0, false, false),
    ] {
        rig.push(0, chunk(s, c, 2, last, turn_last)).unwrap();
    }
    rig.play_until(Duration::from_secs(5)).await;
    let expected: Vec<u8> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .flat_map(|&(s, c)| vec![(s * 16 + c + 1) as u8; 2 * FRAME_BYTES])
        .collect();
    assert_eq!(rig.sent.audio(), expected);
    assert_eq!(rig.sent.media.len(), 8, "one message per 20 ms frame");
    assert_eq!(rig.sent.mark_names(), ["0:0", "0:1"]);
    // Each mark follows its sentence's last frame: 4 frames of sentence 0, sent by 20 ms.
    let sentence0_last = rig.sent.media[3].0;
    assert!(rig.sent.marks[0].0 >= sentence0_last && rig.sent.marks[0].0 < rig.sent.media[4].0 + 1);
    assert_eq!(rig.sent.late(), 0);
}

/// A chunk that fills a gap releases everything buffered behind it, and nothing plays
/// before the gap is filled.
#[tokio::test(start_paused = true)]
async fn waits_for_the_missing_chunk() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 1, 1, true, true)).unwrap();
    assert_eq!(rig.playback.poll(rig.start), None);
    assert_eq!(
        rig.playback.next_wake(),
        Some(rig.start + gap::GAP_WAIT),
        "nothing to send until chunk 0; its repair falls due"
    );
    rig.push(0, chunk(0, 0, 1, false, false)).unwrap();
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(rig.sent.audio()[..FRAME_BYTES], [1; FRAME_BYTES]);
    assert_eq!(rig.sent.audio()[FRAME_BYTES..], [2; FRAME_BYTES]);
}

/// One second of audio goes out at real time: frame `i` is sent at `i * 20 ms - lead`, so
/// Twilio never holds more than the lead plus one frame.
#[tokio::test(start_paused = true)]
async fn paces_at_real_time_with_a_small_lead() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 0, 50, true, true)).unwrap();
    rig.play_until(Duration::from_secs(5)).await;
    assert_eq!(rig.sent.media.len(), 50);
    for (i, (at, _, late)) in rig.sent.media.iter().enumerate() {
        let due = (i as u64 * 20).saturating_sub(LEAD.as_millis() as u64);
        assert_eq!(*at, due, "frame {i}");
        assert!(!late);
    }
    assert_eq!(
        rig.sent.marks,
        [(920, "0:0".to_owned())],
        "right after the last frame"
    );
}

/// A chunk arriving after Twilio ran dry mid-sentence is late (an audible gap); the first
/// frame of a new sentence after a pause is not.
#[tokio::test(start_paused = true)]
async fn counts_late_frames_mid_sentence_only() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 0, 2, false, false)).unwrap();
    rig.play_until(Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.push(0, chunk(0, 1, 2, true, false)).unwrap();
    rig.play_until(Duration::from_secs(2)).await;
    assert_eq!(rig.sent.late(), 1, "only the frame after the gap");
    assert!(rig.sent.media[2].2);

    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.push(0, chunk(1, 0, 2, true, true)).unwrap();
    rig.play_until(Duration::from_secs(3)).await;
    assert_eq!(
        rig.sent.late(),
        1,
        "a new sentence after a pause is not late"
    );
}

/// A newer turn supersedes the older one: its unsent chunks are discarded and later chunks
/// of the old turn are dropped.
#[tokio::test(start_paused = true)]
async fn newer_turn_supersedes_older() {
    let mut rig = Rig::new();
    rig.push(1, chunk(0, 0, 10, false, false)).unwrap();
    rig.push(1, chunk(0, 2, 1, true, true)).unwrap();
    rig.play_until(Duration::from_millis(40)).await;
    let before = rig.sent.media.len();
    assert!(before > 0 && before < 10, "turn 1 is mid-chunk");
    assert_eq!(rig.push(2, chunk(0, 0, 1, true, true)), Ok(2));
    assert_eq!(
        rig.push(1, chunk(0, 1, 1, false, false)),
        Err(Dropped::Superseded)
    );
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(rig.sent.media.len(), before + 1);
    assert_eq!(
        rig.sent.media[before].1[0], 1,
        "turn 2's sentence 0 chunk 0"
    );
    assert_eq!(rig.sent.mark_names(), ["2:0"]);
}

/// Repeated chunks (a redelivery) are dropped, whether buffered or already played.
#[tokio::test(start_paused = true)]
async fn drops_duplicates() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 1, 1, true, true)).unwrap();
    assert_eq!(
        rig.push(0, chunk(0, 1, 1, true, true)),
        Err(Dropped::Duplicate)
    );
    rig.push(0, chunk(0, 0, 1, false, false)).unwrap();
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(
        rig.push(0, chunk(0, 0, 1, false, false)),
        Err(Dropped::Duplicate)
    );
}

/// Echoed marks become `played`; after a barge-in the marks Twilio echoes because of the
/// `clear` are not heard (unless their audio had finished playing by then), the cut turn's later chunks are stale, and a new turn plays.
#[tokio::test(start_paused = true)]
async fn marks_played_and_cleared() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 0, 1, true, false)).unwrap();
    rig.push(0, chunk(1, 0, 1, true, false)).unwrap();
    rig.push(0, chunk(2, 0, 25, false, false)).unwrap();
    rig.play_until(Duration::from_millis(100)).await;
    assert_eq!(
        rig.playback.on_echo("0:0"),
        Echo::Played {
            turn: 0,
            sentence: 0
        }
    );
    let cut = rig.playback.barge_in(Instant::now()).unwrap();
    assert_eq!(
        cut,
        Cut {
            turn: 0,
            // Sentence 1 finished playing before the cut by the pacing clock.
            sentences_heard: 2,
            // Sentence 2's length is not known yet (its last chunk has not come).
            cut: None,
            dropped: 1
        }
    );
    assert_eq!(
        rig.playback.on_echo("0:1"),
        Echo::Played {
            turn: 0,
            sentence: 1
        },
        "heard before the cut"
    );
    assert_eq!(rig.playback.on_echo("0:2"), Echo::Unknown, "never sent");
    assert_eq!(rig.playback.on_echo("0:1"), Echo::Unknown, "each echo once");
    assert_eq!(rig.playback.on_echo("bogus"), Echo::Unknown);
    assert_eq!(rig.push(0, chunk(2, 1, 1, true, true)), Err(Dropped::Stale));
    assert_eq!(
        rig.playback.barge_in(Instant::now()),
        None,
        "nothing left to cut"
    );
    assert_eq!(rig.push(1, chunk(0, 0, 1, true, true)), Ok(0));
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(rig.sent.mark_names().last(), Some(&"1:0"));
}

/// Barge-in needs bot audio pending or playing: not before any audio, not after a finished
/// turn has played out, but yes between sentences of an unfinished turn (within the grace).
#[tokio::test(start_paused = true)]
async fn barge_in_only_while_audio_is_pending() {
    let mut rig = Rig::new();
    assert_eq!(rig.playback.barge_in(rig.start), None);

    rig.push(0, chunk(0, 0, 2, true, false)).unwrap();
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(
        rig.playback.on_echo("0:0"),
        Echo::Played {
            turn: 0,
            sentence: 0
        }
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        rig.playback.playing_turn(Instant::now()),
        Some(0),
        "more sentences may come"
    );
    tokio::time::sleep(GRACE).await;
    assert_eq!(
        rig.playback.playing_turn(Instant::now()),
        None,
        "grace over"
    );

    rig.push(1, chunk(0, 0, 2, true, true)).unwrap();
    rig.play_for(Duration::from_secs(1)).await;
    assert_eq!(
        rig.playback.playing_turn(Instant::now()),
        Some(1),
        "mark not echoed yet"
    );
    assert_eq!(
        rig.playback.on_echo("1:0"),
        Echo::Played {
            turn: 1,
            sentence: 0
        }
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        rig.playback.barge_in(Instant::now()),
        None,
        "the turn is over"
    );
}

/// A chunk lost while a later one of its sentence waits is a gap due after `GAP_WAIT`;
/// fetched again, it plays in its place.
#[tokio::test(start_paused = true)]
async fn a_lost_chunk_is_repaired_in_place() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 1, 1, false, false)).unwrap();
    rig.push(0, chunk(0, 2, 1, true, true)).unwrap();
    assert_eq!(rig.playback.poll(rig.start), None);
    let before = rig.start + gap::GAP_WAIT - Duration::from_millis(1);
    assert_eq!(rig.playback.gap_due(before), None, "not due yet");
    let due = rig.start + gap::GAP_WAIT;
    let gap = rig.playback.gap_due(due).expect("a gap at the cursor");
    assert_eq!((gap.turn, gap.sentence, gap.chunk), (0, 0, 0));
    rig.push(0, chunk(0, 0, 1, false, false)).unwrap();
    assert_eq!(rig.playback.after_repair(gap, due), GapOutcome::Filled);
    rig.play_until(Duration::from_secs(1)).await;
    let expected: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&b| [b; FRAME_BYTES]).collect();
    assert_eq!(rig.sent.audio(), expected);
    assert_eq!(rig.sent.mark_names(), ["0:0"]);
}

/// A chunk the stream lacks too is skipped: the rest of the sentence plays, the turn does
/// not stall.
#[tokio::test(start_paused = true)]
async fn a_chunk_lost_for_good_is_skipped() {
    let mut rig = Rig::new();
    rig.push(0, chunk(0, 1, 1, true, true)).unwrap();
    assert_eq!(rig.playback.poll(rig.start), None);
    let due = rig.start + gap::GAP_WAIT;
    let gap = rig.playback.gap_due(due).unwrap();
    assert_eq!(rig.playback.after_repair(gap, due), GapOutcome::Skipped);
    rig.play_until(Duration::from_secs(1)).await;
    assert_eq!(rig.sent.audio(), [2; FRAME_BYTES]);
    assert_eq!(rig.sent.mark_names(), ["0:0"]);
}

/// With only a later sentence waiting, the missing one may still be synthesising: it is
/// tried `SENTENCE_ATTEMPTS` times, a second apart, then skipped with its mark sent.
#[tokio::test(start_paused = true)]
async fn a_missing_sentence_is_waited_for_then_skipped() {
    let mut rig = Rig::new();
    rig.push(0, chunk(1, 0, 1, true, true)).unwrap();
    assert_eq!(rig.playback.poll(rig.start), None);
    assert_eq!(rig.playback.gap_due(rig.start + gap::GAP_WAIT), None);
    let mut now = rig.start;
    for attempt in 1..=gap::SENTENCE_ATTEMPTS {
        now += gap::GAP_WAIT_SENTENCE;
        let gap = rig.playback.gap_due(now).expect("due a second later");
        let outcome = rig.playback.after_repair(gap, now);
        let expected = if attempt < gap::SENTENCE_ATTEMPTS {
            GapOutcome::Waiting
        } else {
            GapOutcome::Skipped
        };
        assert_eq!(outcome, expected, "attempt {attempt}");
    }
    rig.play_until(Duration::from_secs(5)).await;
    assert_eq!(
        rig.sent.mark_names(),
        ["0:0", "0:1"],
        "the skipped sentence's mark too"
    );
    assert_eq!(rig.sent.audio(), [17; FRAME_BYTES]);
}
