//! Two ranks on two emulated hosts: two network namespaces joined by a veth pair, mpirun in
//! the first, the second "host" reached through a `plm_rsh_agent` stand-in that runs Open MPI's
//! daemon in the other namespace instead of over ssh. The ranks talk TCP, as on two machines;
//! they share the filesystem (the "shared filesystem" of a cluster) and the kernel.
//!
//! Needs root (CAP_NET_ADMIN) and `ip`; elsewhere the tests print SKIPPED and pass, unless
//! SHMPOOL_MPI_REQUIRE_HOSTS=1 (CI) makes that a failure.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{mpirun_cmd_via, save_f64, shmpool_map, text, Dir, BIN};

/// Two network namespaces `a` (where mpirun runs, 10.217.N.1) and `b` (10.217.N.2), deleted
/// on drop.
struct Hosts {
    a: String,
    b: String,
    net: u32,
}

fn ip(args: &[&str]) -> std::io::Result<Output> {
    Command::new("ip").args(args).output()
}

impl Hosts {
    fn new() -> Option<Hosts> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{k}", std::process::id() % 100_000);
        let net = (std::process::id() * 4 + k) % 250 + 1;
        let h = Hosts { a: format!("shmpool-{id}-a"), b: format!("shmpool-{id}-b"), net };
        let ok = |args: &[&str]| ip(args).is_ok_and(|o| o.status.success());
        if !ok(&["netns", "add", &h.a]) {
            return None;
        }
        let (va, vb) = (format!("sp{id}a"), format!("sp{id}b"));
        let (ipa, ipb) = (format!("{}/24", h.addr(1)), format!("{}/24", h.addr(2)));
        let steps: [&[&str]; 11] = [
            &["netns", "add", &h.b],
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
            &["link", "set", &va, "netns", &h.a],
            &["link", "set", &vb, "netns", &h.b],
            &["-n", &h.a, "addr", "add", &ipa, "dev", &va],
            &["-n", &h.b, "addr", "add", &ipb, "dev", &vb],
            &["-n", &h.a, "link", "set", "lo", "up"],
            &["-n", &h.b, "link", "set", "lo", "up"],
            &["-n", &h.a, "link", "set", &va, "up"],
            &["-n", &h.b, "link", "set", &vb, "up"],
            &["-n", &h.a, "link", "show", &va],
        ];
        for s in steps {
            assert!(ok(s), "ip {s:?} failed");
        }
        Some(h)
    }

    fn addr(&self, host: u32) -> String {
        format!("10.217.{}.{host}", self.net)
    }

    /// The hostfile and the rsh agent stand-in in `d`, and `shmpool-mpi` with `args` on one
    /// rank per host.
    fn mpirun(&self, d: &Dir, args: &[&str]) -> Command {
        let hostfile = d.path("hosts");
        std::fs::write(&hostfile, format!("{} slots=1\n{} slots=1\n", self.addr(1), self.addr(2))).unwrap();
        let agent = d.path("agent.sh");
        std::fs::write(
            &agent,
            format!(
                "#!/bin/sh\n# plm_rsh_agent stand-in: [options] HOST COMMAND... runs COMMAND in HOST's namespace.\n\
                 while [ $# -gt 0 ]; do case \"$1\" in -*) shift ;; *) break ;; esac; done\n\
                 host=$1; shift\n\
                 case \"$host\" in {a}) ns={na} ;; {b}) ns={nb} ;; *) echo \"unknown host $host\" >&2; exit 1 ;; esac\n\
                 exec ip netns exec \"$ns\" sh -c \"$*\"\n",
                a = self.addr(1),
                b = self.addr(2),
                na = self.a,
                nb = self.b
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let net = format!("10.217.{}.0/24", self.net);
        let mut c = mpirun_cmd_via(d, &["ip", "netns", "exec", &self.a], 2, Path::new(BIN), args);
        c.env("OMPI_MCA_orte_default_hostfile", &hostfile)
            .env("OMPI_MCA_plm_rsh_agent", &agent)
            .env("OMPI_MCA_oob_tcp_if_include", &net)
            .env("OMPI_MCA_btl_tcp_if_include", &net)
            .env("OMPI_MCA_btl", "self,tcp");
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

fn hosts_or_skip() -> Option<Hosts> {
    let h = Hosts::new();
    if h.is_none() {
        assert!(
            std::env::var_os("SHMPOOL_MPI_REQUIRE_HOSTS").is_none(),
            "cannot create network namespaces (needs root and ip)"
        );
        eprintln!("SKIPPED: cannot create network namespaces (needs root and ip)");
    }
    h
}

#[test]
fn two_ranks_on_two_emulated_hosts_write_the_file_shmpool_map_writes() {
    let Some(hosts) = hosts_or_skip() else { return };
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 1_000_003);
    let (x, out, reference) = (d.s("x.npy"), d.s("out.npy"), d.s("ref.npy"));
    let expr = "sqrt(x) * 1.5 + 0.25 + i";
    shmpool_map(&[&x, "-o", &reference, "--expr", expr]);
    let o = hosts
        .mpirun(&d, &["map", &x, "-o", &out, "--expr", expr, "-j", "1"])
        .env("OMPI_MCA_rmaps_base_display_map", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let map = String::from_utf8_lossy(&o.stdout);
    assert!(map.contains(&format!("Data for node: {}", hosts.addr(2))), "rank 1 ran on the second host: {}", text(&o));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(), "outputs differ");
    assert_eq!(d.debris(&["x.npy", "out.npy", "ref.npy", "hosts", "agent.sh"]), Vec::<String>::new());
}

/// The network namespace of a process.
#[cfg(feature = "testing")]
fn netns(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

#[test]
#[cfg(feature = "testing")]
fn a_rank_killed_on_the_other_host_ends_the_job_and_leaves_nothing() {
    use std::time::{Duration, Instant};
    let Some(hosts) = hosts_or_skip() else { return };
    let d = Dir::new();
    save_f64(&d.path("x.npy"), 3_000_000);
    let hold = d.path("hold");
    std::fs::create_dir(&hold).unwrap();
    let (x, out) = (d.s("x.npy"), d.s("out.npy"));
    let child = hosts
        .mpirun(&d, &["map", "--expr", "sqrt(x) * 1.5 + 0.25", &x, "-o", &out, "-j", "1", "--chunk-len", "65536"])
        .env("SHMPOOL_MPI_TEST_HOLD", &hold)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(0..2).all(|r| hold.join(format!("rank{r}")).exists()) {
        assert!(Instant::now() < deadline, "the ranks never reached the middle of their map");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = common::descendants(child.id());
    let rank = |r: usize| -> u32 {
        let s = std::fs::read_to_string(hold.join(format!("rank{r}"))).unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_ne!(netns(rank(0)), netns(rank(1)), "the ranks run on different (emulated) hosts");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rank(1) as i32), nix::sys::signal::SIGKILL).unwrap();
    let (code, err, took, seen) = common::finish(child, Instant::now(), seen);
    assert_ne!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(10), "the job took {took:?} to end after rank 1 was killed\n{err}");
    common::nothing_left(&d, &seen);
}
