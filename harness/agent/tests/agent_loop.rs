//! The agent's loop driven in-process over a socketpair (no binary): requests are answered
//! in order with their ids, and the loop ends when the peer closes.

use std::{os::unix::net::UnixStream, time::Duration};

use crlab_agent::{serve, Agent, Channel, Config, Ended};
use crlab_protocol::{
    frame::{read_frame, write_frame},
    Hello, Request, RequestKind, Response, ResponseKind, RunCommand,
};
use prost::Message;

#[test]
fn serve_answers_in_order_and_ends_when_the_peer_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, guest) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let config = Config {
        audit_log: Some(dir.path().join("audit.log")),
        poweroff_exits: true,
        ..Config::default()
    };
    let server = std::thread::spawn(move || {
        let mut channel = Channel::from_stream(guest).unwrap();
        serve(&Agent::new(config), &mut channel).unwrap()
    });
    let requests = [
        RequestKind::Run(RunCommand {
            argv: vec!["echo".into(), "one".into()],
            ..RunCommand::default()
        }),
        RequestKind::Hello(Hello {}),
    ];
    for (id, kind) in (40u64..).zip(requests) {
        let request = Request {
            id,
            kind: Some(kind),
        };
        write_frame(&mut host, &request.encode_to_vec()).unwrap();
        let response = Response::decode(read_frame(&mut host).unwrap().as_slice()).unwrap();
        assert_eq!(response.id, id);
        assert_eq!(response.error, "");
        match response.kind {
            Some(ResponseKind::Run(r)) => assert_eq!(r.stdout, b"one\n"),
            Some(ResponseKind::Hello(h)) => assert_eq!(h.audit_marker, 0),
            other => panic!("{other:?}"),
        }
    }
    drop(host);
    assert_eq!(server.join().unwrap(), Ended::PeerClosed);
}
