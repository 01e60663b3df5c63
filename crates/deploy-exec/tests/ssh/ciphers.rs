//! The SSH transport's ciphers (on aws-lc-rs, the workspace's one crypto backend) against a real OpenSSH server offering one cipher at a time.

use deploy_core::{CommandSpec, TargetType};
use deploy_exec::Executor;
use deploy_testkit::SshdHosts;

use crate::common::*;

/// Runs `echo <cipher>` through an sshd that offers only `cipher`.
async fn echo_through(cipher: &str) -> Result<String, deploy_exec::ExecError> {
    let hosts = SshdHosts::start_with_ciphers(1, cipher).unwrap();
    let exec = executor(&hosts);
    let (_logs, c) = ctx(20);
    let t = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    let echo = CommandSpec::new(vec!["echo".to_owned(), cipher.to_owned()]).unwrap();
    exec.run_command(&t, &echo, &c).await.map(|o| o.stdout)
}

#[tokio::test]
async fn each_offered_cipher_carries_a_session() {
    // The AEAD ciphers are the backend's own code; the CTR one pairs it with an HMAC.
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes256-ctr",
    ] {
        let out = echo_through(cipher).await;
        assert_eq!(
            out.ok().as_deref(),
            Some(&*format!("{cipher}\n")),
            "{cipher}"
        );
    }
    // The server's restriction is real: a cipher the client does not offer fails.
    let err = echo_through("aes128-cbc").await.unwrap_err().to_string();
    assert!(err.contains("no common cipher algorithm"), "{err}");
}
