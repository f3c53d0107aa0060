//! Deployment, as shipped: the systemd unit (`systemd-analyze verify`, and its exposure score
//! from `systemd-analyze security --offline=true` kept at or below [`MAX_EXPOSURE`]), the
//! packaged configuration (its store in the unit's state directory; `archipel run` on it waits
//! for its radio and broker and exits 0 on SIGTERM), the Debian package built by cargo-deb from
//! the debug binary already built (what it holds, its control fields, and installing, upgrading
//! and purging it in a scratch root), every system call the gateway makes allowed by the unit's
//! SystemCallFilter (traced with strace), and deploy/compose (parsed, every mounted file
//! present).
//!
//! No container engine and no systemd run here: the unit is checked offline, the package is
//! installed with `dpkg --root` (its maintainer scripts honour DPKG_ROOT, so they change the
//! scratch root only), and the compose file is parsed with PyYAML from the test venv.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use archipel_e2e::{
    Running, TempDir, archipel_bin, free_port, run_with_limit, temp_dir, workspace,
};
use serde_json::Value;

/// The highest exposure score `systemd-analyze security` may give the unit: systemd calls
/// scores below 2.0 "OK" (the unit scores 1.5; what is left is the network it must use, the
/// dialout group and serial devices).
const MAX_EXPOSURE: f64 = 2.0;

/// Time limit for each tool run.
const LIMIT: Duration = Duration::from_secs(120);

/// Where the package installs the binary, its config and its state directory.
const BIN: &str = "/usr/bin/archipel";
const CONFIG: &str = "/etc/archipel/gateway.toml";
const STATE_DIR: &str = "/var/lib/archipel";

fn unit_path() -> PathBuf {
    workspace().join("deploy/systemd/archipel.service")
}

fn packaged_config_path() -> PathBuf {
    workspace().join("deploy/debian/gateway.toml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a command to completion within [`LIMIT`].
fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with_limit(cmd, LIMIT, program)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Asserts the command succeeded and returns its standard output.
fn success(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The values of `Key=` lines in a unit file, in order.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The unit with its ExecStart pointed at `bin` (verify needs the binary to exist), written as
/// `dir/archipel.service`.
fn unit_for(bin: &Path, dir: &Path) -> PathBuf {
    let unit = read(&unit_path());
    let exec = directive(&unit, "ExecStart");
    assert_eq!(exec, [format!("{BIN} run --config {CONFIG}")]);
    let path = dir.join("archipel.service");
    let rewritten = unit.replace(
        &format!("ExecStart={BIN} "),
        &format!("ExecStart={} ", bin.display()),
    );
    std::fs::write(&path, rewritten).unwrap();
    path
}

/// The score on `systemd-analyze security`'s last line:
/// `→ Overall exposure level for archipel.service: 1.5 OK 🙂`.
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{report}"));
    let after = line.rsplit_once(": ").expect("a score after the colon").1;
    after
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"))
}

#[test]
fn the_unit_verifies_and_its_exposure_score_is_at_most_the_threshold() {
    let dir = TempDir(temp_dir("deploy-unit"));
    let unit = unit_for(&archipel_bin(), &dir.0);
    let unit = unit.to_str().unwrap();

    let out = run("systemd-analyze", &["verify", unit]);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on an unknown key or a bad value (it only warns): a warning about the
    // unit is a failure here.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("archipel.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );

    let out = run(
        "systemd-analyze",
        &["security", "--offline=true", "--no-pager", unit],
    );
    let report = success(out, "systemd-analyze security");
    let score = exposure(&report);
    println!(
        "systemd-analyze security --offline=true: exposure {score:.1} (at most {MAX_EXPOSURE:.1})"
    );
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} above {MAX_EXPOSURE}:\n{report}"
    );

    // What the task asks of the unit, so a lower score reached otherwise still keeps them.
    let unit = read(&unit_path());
    for (key, value) in [
        ("User", "archipel"),
        ("SupplementaryGroups", "dialout"),
        ("StateDirectory", "archipel"),
        ("ConfigurationDirectory", "archipel"),
        ("ProtectSystem", "strict"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("DevicePolicy", "closed"),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert!(
            directive(&unit, key).contains(&value),
            "{key}={value} is not in the unit"
        );
    }
    let devices = directive(&unit, "DeviceAllow");
    assert_eq!(devices, ["char-ttyUSB rw", "char-ttyACM rw"]);
}

#[test]
fn the_packaged_config_keeps_the_store_in_the_state_directory_and_run_exits_0_on_sigterm() {
    let unit = read(&unit_path());
    assert_eq!(directive(&unit, "StateDirectory"), ["archipel"]);
    assert_eq!(directive(&unit, "WorkingDirectory"), [STATE_DIR]);
    let config = read(&packaged_config_path());
    let store = format!("path = \"{STATE_DIR}/archipel.sqlite\"");
    assert!(
        config.lines().any(|l| l == store),
        "the packaged config's store is not {STATE_DIR}/archipel.sqlite"
    );

    // As packaged, but for the store (in a temp dir, by the documented override) and the
    // broker's port (a free one: nothing answers, as on a hub without Mosquitto).
    let dir = TempDir(temp_dir("deploy-run"));
    let broker = "address = \"127.0.0.1:1883\"";
    assert!(config.contains(broker), "the packaged broker moved");
    let file = dir.0.join("gateway.toml");
    let port = free_port();
    std::fs::write(
        &file,
        config.replace(broker, &format!("address = \"127.0.0.1:{port}\"")),
    )
    .unwrap();
    let store = dir.0.join("archipel.sqlite");

    let mut cmd = Command::new(archipel_bin());
    cmd.args(["check-config", file.to_str().unwrap()])
        .env("ARCHIPEL_STORE__PATH", &store);
    let out = success(run_with_limit(cmd, LIMIT, "check-config"), "check-config");
    assert!(out.contains("configuration OK"), "{out}");

    let run = || {
        let mut cmd = Command::new(archipel_bin());
        cmd.args(["run", "--config", file.to_str().unwrap()])
            .env("ARCHIPEL_STORE__PATH", &store)
            .env("ARCHIPEL_HTTP__LISTEN", "127.0.0.1:0");
        Running::spawn(cmd, "archipel run (packaged config)")
    };
    // SIGTERM while it starts (the store opening): a clean stop too, not a kill.
    let gateway = run();
    gateway.wait_line(LIMIT, |l| {
        l.contains("starting with this configuration").then_some(())
    });
    assert!(
        gateway.stop(),
        "archipel run did not exit 0 on a SIGTERM while starting"
    );
    // Running: it found neither its radio nor its broker, and waits for them.
    let gateway = run();
    gateway.wait_line(LIMIT, |l| l.contains("mqtt broker down").then_some(()));
    assert!(store.exists(), "the store was not made");
    assert!(
        gateway.stop(),
        "archipel run did not exit 0 within 10 s of SIGTERM (what systemd's KillSignal sends)"
    );
}

/// `cargo deb` on the debug build already there: no release build in the suite.
fn build_deb(out_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: run tests/run, which installs it"
    );
    let mut cmd = Command::new(&cargo);
    // --profile dev packages target/debug (cargo-deb warns that it is for tests only: quiet).
    cmd.args([
        "deb",
        "-p",
        "archipel-gateway",
        "--no-build",
        "--profile",
        "dev",
        "--no-strip",
        "--fast",
        "--quiet",
        "-o",
    ])
    .arg(out_dir)
    .current_dir(workspace());
    let printed = success(run_with_limit(cmd, LIMIT, "cargo deb"), "cargo deb");
    let deb = out_dir.join(format!(
        "archipel_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        deb_arch()
    ));
    assert!(
        deb.exists(),
        "no {} (cargo deb printed {printed})",
        deb.display()
    );
    deb
}

fn deb_arch() -> String {
    success(
        run("dpkg", &["--print-architecture"]),
        "dpkg --print-architecture",
    )
    .trim()
    .to_owned()
}

/// `dpkg --root=ROOT` as a user would run it, but chrootless and forced past the dependencies
/// the empty scratch database lacks (libc6, systemd). Scripts run on this host with
/// DPKG_ROOT=ROOT; ours act inside it only.
fn dpkg(root: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-not-root",
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "--log=/dev/null",
        ])
        .args(args)
        // dpkg wants ldconfig and start-stop-daemon on PATH.
        .env(
            "PATH",
            format!(
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    success(
        run_with_limit(cmd, LIMIT, "dpkg"),
        &format!("dpkg {args:?}"),
    )
}

/// A scratch root with an empty dpkg database.
fn scratch_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let admin = root.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(sub)).unwrap();
    }
    for file in ["status", "available"] {
        std::fs::write(admin.join(file), "").unwrap();
    }
    root
}

/// Lines of `name:...` in a passwd-style file, by name.
fn entries(path: &Path) -> BTreeMap<String, Vec<String>> {
    read(path)
        .lines()
        .map(|l| {
            let fields: Vec<String> = l.split(':').map(str::to_owned).collect();
            (fields[0].clone(), fields)
        })
        .collect()
}

#[test]
fn the_deb_holds_binary_unit_config_and_docs_and_installs_upgrades_and_purges_in_a_scratch_root() {
    let dir = TempDir(temp_dir("deploy-deb"));
    let deb = build_deb(&dir.0);
    let deb_s = deb.to_str().unwrap();

    // What it holds: path, mode and owner of each file.
    let contents = success(
        run("dpkg-deb", &["--contents", deb_s]),
        "dpkg-deb --contents",
    );
    let files: BTreeMap<String, String> = contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let path = words.last()?.strip_prefix('.')?;
            Some((path.to_owned(), format!("{} {}", words[0], words[1])))
        })
        .collect();
    let mut expected = vec![
        (BIN, "-rwxr-xr-x 0/0"),
        (CONFIG, "-rw-r--r-- 0/0"),
        ("/lib/systemd/system/archipel.service", "-rw-r--r-- 0/0"),
        ("/usr/lib/sysusers.d/archipel.conf", "-rw-r--r-- 0/0"),
        ("/usr/share/doc/archipel/README.md", "-rw-r--r-- 0/0"),
        ("/usr/share/doc/archipel/copyright", "-rw-r--r-- 0/0"),
        (
            "/usr/share/doc/archipel/deploy/gateway.toml",
            "-rw-r--r-- 0/0",
        ),
        ("/usr/share/doc/archipel/deploy/sim.toml", "-rw-r--r-- 0/0"),
        (
            "/usr/share/doc/archipel/deploy/xmpp/prosody.cfg.lua",
            "-rw-r--r-- 0/0",
        ),
        (
            "/usr/share/doc/archipel/deploy/profiles/gaulix/gateway.toml",
            "-rw-r--r-- 0/0",
        ),
        (
            "/usr/share/doc/archipel/deploy/profiles/federation/hub-a.toml",
            "-rw-r--r-- 0/0",
        ),
        (
            "/usr/share/archipel/dashboards/overview.json",
            "-rw-r--r-- 0/0",
        ),
        (
            "/usr/share/archipel/dashboards/radio.json",
            "-rw-r--r-- 0/0",
        ),
        ("/usr/share/archipel/dashboards/README.md", "-rw-r--r-- 0/0"),
    ];
    expected.sort();
    for (path, mode) in &expected {
        assert_eq!(
            files.get(*path).map(String::as_str),
            Some(*mode),
            "{path} in the package:\n{contents}"
        );
    }
    let unexpected: Vec<&String> = files
        .keys()
        .filter(|p| {
            !p.starts_with("/usr/share/doc/archipel/") && !expected.iter().any(|(e, _)| e == p)
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected files: {unexpected:?}");

    // Control fields: the shared libraries it links (dpkg-shlibdeps), a way to make its user,
    // and the config a conffile.
    let fields = success(
        run(
            "dpkg-deb",
            &["--field", deb_s, "Package", "Depends", "Section"],
        ),
        "dpkg-deb --field",
    );
    assert!(fields.contains("Package: archipel\n"), "{fields}");
    assert!(fields.contains("Section: net\n"), "{fields}");
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends: {fields}"));
    assert!(
        depends.contains("libc6") && depends.contains("systemd | adduser"),
        "Depends: {depends}"
    );
    let conffiles = success(
        run("dpkg-deb", &["--info", deb_s, "conffiles"]),
        "dpkg-deb --info conffiles",
    );
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONFIG]);

    // Installed into a scratch root by dpkg itself, maintainer scripts included.
    let passwd_before = std::fs::read("/etc/passwd").ok();
    let root = scratch_root(&dir.0);
    dpkg(&root, &["--install", deb_s]);
    let status = read(&root.join("var/lib/dpkg/status"));
    assert!(
        status.contains("Package: archipel\nStatus: install ok installed\n"),
        "{status}"
    );
    assert_eq!(
        read(&root.join("var/lib/dpkg/info/archipel.conffiles")).trim(),
        CONFIG
    );
    for (installed, repo) in [
        (CONFIG, packaged_config_path()),
        ("/lib/systemd/system/archipel.service", unit_path()),
        (
            "/usr/lib/sysusers.d/archipel.conf",
            workspace().join("deploy/debian/archipel.sysusers"),
        ),
    ] {
        assert_eq!(
            read(&root.join(&installed[1..])),
            read(&repo),
            "{installed} is not {}",
            repo.display()
        );
    }
    let copyright = read(&root.join("usr/share/doc/archipel/copyright"));
    assert!(
        copyright.contains("GNU GENERAL PUBLIC LICENSE"),
        "{copyright}"
    );
    // postinst made the service user (systemd-sysusers --root), in dialout for serial radios.
    let users = entries(&root.join("etc/passwd"));
    let user = users.get("archipel").expect("postinst made user archipel");
    assert_eq!(user[5], STATE_DIR, "its home: {user:?}");
    let groups = entries(&root.join("etc/group"));
    assert!(groups.contains_key("archipel"), "{groups:?}");
    let dialout = groups.get("dialout").expect("a dialout group");
    assert!(
        dialout[3].split(',').any(|m| m == "archipel"),
        "{dialout:?}"
    );
    assert_eq!(
        std::fs::read("/etc/passwd").ok(),
        passwd_before,
        "the install changed this host's users"
    );
    // The packaged binary runs and accepts the packaged config.
    let bin = root.join(&BIN[1..]);
    let version = success(
        run(bin.to_str().unwrap(), &["--version"]),
        "archipel --version",
    );
    assert_eq!(
        version.trim(),
        format!("archipel {}", env!("CARGO_PKG_VERSION"))
    );
    let mut cmd = Command::new(&bin);
    cmd.args(["check-config", root.join(&CONFIG[1..]).to_str().unwrap()])
        .env("ARCHIPEL_STORE__PATH", dir.0.join("check.sqlite"));
    success(
        run_with_limit(cmd, LIMIT, "check-config"),
        "packaged check-config",
    );
    // The installed unit verifies with its ExecStart on the packaged binary.
    let unit_dir = dir.0.join("unit");
    std::fs::create_dir(&unit_dir).unwrap();
    let unit = unit_for(&bin, &unit_dir);
    success(
        run("systemd-analyze", &["verify", unit.to_str().unwrap()]),
        "systemd-analyze verify (packaged binary)",
    );

    // An upgrade (the same package again) keeps a local change to the conffile.
    let config = root.join(&CONFIG[1..]);
    let mut local = read(&config);
    local.push_str("# a local change\n");
    std::fs::write(&config, &local).unwrap();
    dpkg(&root, &["--install", deb_s]);
    assert_eq!(
        read(&config),
        local,
        "the upgrade overwrote the local config"
    );

    // Removal keeps the config and the state; purge removes both (the user stays).
    let state = root.join(&STATE_DIR[1..]);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("identity.key"), "").unwrap();
    dpkg(&root, &["--remove", "archipel"]);
    assert!(!bin.exists(), "the binary is still there after removal");
    assert!(
        config.exists() && state.exists(),
        "removal took config or state"
    );
    dpkg(&root, &["--purge", "archipel"]);
    assert!(!config.exists(), "purge left the config");
    assert!(!state.exists(), "purge left {STATE_DIR}");
    assert!(entries(&root.join("etc/passwd")).contains_key("archipel"));
}

/// The test venv's Python (`tests/run` installs PyYAML into it).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("ARCHIPEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"));
    let python = venv.join("bin").join("python3");
    assert!(
        python.exists(),
        "{} is missing: run `tests/run`, which makes the venv and installs PyYAML",
        python.display()
    );
    python
}

/// YAML files as JSON values, by PyYAML's safe loader.
fn yaml(paths: &[&Path]) -> Vec<Value> {
    let mut cmd = Command::new(venv_python());
    cmd.args([
        "-c",
        "import json, sys, yaml\n\
         print(json.dumps([yaml.safe_load(open(p)) for p in sys.argv[1:]]))",
    ])
    .args(paths);
    let out = success(run_with_limit(cmd, LIMIT, "python3"), "PyYAML");
    match serde_json::from_str(&out) {
        Ok(Value::Array(values)) => values,
        other => panic!("PyYAML printed {other:?}"),
    }
}

#[test]
fn the_compose_file_parses_and_every_file_it_mounts_is_in_the_repository() {
    let compose_dir = workspace().join("deploy/compose");
    let provisioning = compose_dir.join("grafana/provisioning");
    let [compose, datasource, dashboards, prometheus] = yaml(&[
        &compose_dir.join("compose.yaml"),
        &provisioning.join("datasources/prometheus.yaml"),
        &provisioning.join("dashboards/archipel.yaml"),
        &compose_dir.join("prometheus.yml"),
    ])
    .try_into()
    .expect("four documents");

    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["archipel", "grafana", "mosquitto", "prometheus", "prosody"])
    );
    let declared = |section: &str| -> BTreeSet<String> {
        compose[section]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let (volumes, secrets) = (declared("volumes"), declared("secrets"));

    // Every bind mount's source exists; named volumes and secrets are declared.
    let mut mounts: BTreeMap<(String, String), String> = BTreeMap::new();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {volume}"));
            let mut parts = spec.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().expect("a target"));
            if source.starts_with('.') || source.starts_with('/') {
                mounts.insert((name.clone(), target.to_owned()), source.to_owned());
                let path = compose_dir.join(source);
                assert!(path.exists(), "{name} mounts {source}, which is not there");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} undeclared"
                );
            }
        }
        for secret in service["secrets"].as_array().into_iter().flatten() {
            let secret = secret.as_str().expect("a secret name");
            assert!(
                secrets.contains(secret),
                "{name}: secret {secret} undeclared"
            );
        }
    }
    for (name, secret) in compose["secrets"].as_object().expect("secrets") {
        let file = secret["file"].as_str().expect("a secret file");
        assert!(compose_dir.join(file).is_file(), "secret {name}: no {file}");
    }

    // The gateway image: built from the repository root by a multi-stage Dockerfile.
    let build = &services["archipel"]["build"];
    let context = compose_dir.join(build["context"].as_str().expect("a context"));
    assert_eq!(
        context.canonicalize().unwrap(),
        workspace().canonicalize().unwrap()
    );
    let dockerfile = context.join(build["dockerfile"].as_str().expect("a dockerfile"));
    let recipe = read(&dockerfile);
    let stages = recipe.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(
        stages >= 2 && recipe.contains("COPY --from=build "),
        "{recipe}"
    );
    let ignore = read(&dockerfile.with_file_name("Dockerfile.dockerignore"));
    assert!(ignore.lines().any(|l| l == "target"), "{ignore}");
    let gateway_config = mounts
        .get(&("archipel".into(), CONFIG.into()))
        .expect("the gateway's config mounted at /etc/archipel/gateway.toml");

    // Grafana: Prometheus as its data source, and the provider reads the dashboards mount.
    let source = &datasource["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["url"], "http://prometheus:9090");
    let provider_path = dashboards["providers"][0]["options"]["path"]
        .as_str()
        .expect("a provider path");
    assert_eq!(
        mounts
            .get(&("grafana".into(), provider_path.into()))
            .map(String::as_str),
        Some("../../dashboards"),
        "the dashboards provider does not read the dashboards mount"
    );
    assert!(
        mounts.contains_key(&("grafana".into(), "/etc/grafana/provisioning".into())),
        "Grafana's provisioning is not mounted"
    );
    assert!(
        prometheus["scrape_configs"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );

    // The compose gateway config is valid, with the secret and store on this machine's paths.
    let dir = TempDir(temp_dir("deploy-compose"));
    let config = read(&compose_dir.join(gateway_config))
        .replace(
            "/run/secrets/xmpp_secret",
            compose_dir.join("xmpp.secret").to_str().unwrap(),
        )
        .replace(&format!("{STATE_DIR}/"), &format!("{}/", dir.0.display()));
    let file = dir.0.join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let out = run(
        archipel_bin().to_str().unwrap(),
        &["check-config", file.to_str().unwrap()],
    );
    success(out, "check-config (compose gateway.toml)");
}

/// Every system call in a named set of `systemd-analyze syscall-filter`, nested sets expanded.
fn syscall_set(name: &str, into: &mut BTreeSet<String>) {
    let listing = success(
        run("systemd-analyze", &["syscall-filter", "--no-pager", name]),
        "systemd-analyze syscall-filter",
    );
    // The first line names the set; members follow, one a line, after `#` comments.
    for member in listing
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if member.starts_with('@') {
            syscall_set(member, into);
        } else {
            into.insert(member.to_owned());
        }
    }
}

#[test]
fn every_system_call_the_gateway_makes_is_in_the_units_filter() {
    // What the unit allows: SystemCallFilter=@system-service, then ~@privileged @resources.
    let unit = read(&unit_path());
    assert_eq!(
        directive(&unit, "SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );
    let mut allowed = BTreeSet::new();
    syscall_set("@system-service", &mut allowed);
    let mut denied = BTreeSet::new();
    syscall_set("@privileged", &mut denied);
    syscall_set("@resources", &mut denied);
    assert!(
        allowed.contains("read") && denied.contains("setuid"),
        "sets not read"
    );

    // The packaged config with its radio (a simulator's pseudo-terminal, as serial as a USB
    // radio), its broker (a real Mosquitto) and federation listening (the identity key made):
    // every path a hub's gateway takes at start, connected.
    let sim = archipel_e2e::SimProcess::start(archipel_e2e::TEST_WORLD, 2);
    let pty = sim.radio("!0000a001").serial.clone().expect("a pty");
    let broker = archipel_e2e::mosquitto::Mosquitto::start(Default::default());
    let dir = TempDir(temp_dir("deploy-syscalls"));
    let config = read(&packaged_config_path())
        .replace("/dev/ttyUSB0", &pty)
        .replace("127.0.0.1:1883", &format!("127.0.0.1:{}", broker.port()))
        + &format!("\n[federation]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    let file = dir.0.join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let trace = dir.0.join("trace");

    // As the service runs, not as root: SQLite, for one, chowns its journal only as root.
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is missing: run tests/run, which installs it"
    );
    // A directory this process made is owned by its effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir.0).unwrap()) == 0;
    let mut cmd = if root {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&pty, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "strace",
        ]);
        cmd
    } else {
        Command::new("strace")
    };
    // strace traces from the gateway's own execve on: none of setpriv's calls are in it.
    cmd.args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(archipel_bin())
        .args(["run", "--config"])
        .arg(&file)
        .env("ARCHIPEL_STORE__PATH", dir.0.join("archipel.sqlite"))
        .env("ARCHIPEL_HTTP__LISTEN", "127.0.0.1:0");
    let gateway = Running::spawn(cmd, "archipel run under strace");
    let mut up = BTreeSet::new();
    while up.len() < 2 {
        gateway.wait_line(LIMIT, |l| {
            ["radio radio up", "mqtt broker up"]
                .into_iter()
                .find(|what| l.contains(what))
                .map(|what| up.insert(what))
        });
    }
    // SIGTERM to the gateway itself (strace's child); strace then exits with its status.
    let tracer = gateway.id();
    let children = read(Path::new(&format!("/proc/{tracer}/task/{tracer}/children")));
    let pid: i32 = children
        .trim()
        .parse()
        .expect("strace has one child, the gateway");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        gateway.wait_exit(Duration::from_secs(10)),
        "archipel run under strace did not exit 0 on SIGTERM"
    );
    assert!(dir.0.join("identity.key").exists(), "no identity key made");

    // `PID name(args) = result`: the names.
    let made: BTreeSet<String> = read(&trace)
        .lines()
        .filter_map(|l| {
            let call = l.split_once(' ')?.1.trim_start();
            let name = call.split_once('(')?.0;
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_owned())
        })
        .collect();
    assert!(
        made.contains("execve") && made.contains("openat"),
        "{made:?}"
    );
    let refused: Vec<&String> = made
        .iter()
        .filter(|c| !allowed.contains(*c) || denied.contains(*c))
        .collect();
    println!(
        "{} distinct system calls, all in @system-service minus @privileged @resources",
        made.len()
    );
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter refuses {refused:?} (EPERM) that the gateway makes"
    );
    drop(sim);
}
