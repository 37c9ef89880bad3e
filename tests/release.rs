//! The release (scripts/release.sh, .github/workflows/release.yml): one version everywhere, and
//! every asset of `scripts/release.sh --dry-run` checked as a user would meet it.
//!
//! `versions_agree` runs with the other tests. The `dry_run` tests read the folder the dry run
//! wrote (target/release-dry-run, or WIW_RELEASE_DIR): scripts/test.sh runs
//! `scripts/release.sh --dry-run` and then `cargo test --test release -- dry_run::`.

#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const IMAGE: &str = "ghcr.io/workload-identity-webhook/workload-identity-webhook";
const CHART: &str = "charts/workload-identity-webhook";
const OVERLAYS: [&str; 4] = ["cluster-wide", "namespace-opt-in", "cert-manager", "local"];
const PLUGIN: &str = "kubectl-workload_identity";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a command in the repository root; panics unless it succeeds; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    serde_json::from_str(&run(
        &cargo,
        &["metadata", "--no-deps", "--format-version", "1", "--locked"],
    ))
    .unwrap()
}

/// The workspace's version: every package of the workspace carries it.
fn version() -> String {
    let metadata = cargo_metadata();
    let versions: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions.len(),
        1,
        "the workspace's packages have different versions: {versions:?}"
    );
    versions.into_iter().next().unwrap().to_owned()
}

/// The tag of the image in a kustomization's `images:` entry for the webhook's image.
fn kustomization_tag(path: &str) -> String {
    let k = yaml(path);
    let entry = k["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["name"] == IMAGE))
        .unwrap_or_else(|| panic!("{path} sets no tag for {IMAGE}"));
    entry["newTag"].as_str().unwrap().to_owned()
}

#[test]
fn versions_agree() {
    let v = version();
    let semver = v.split('.').collect::<Vec<_>>();
    assert!(
        semver.len() == 3 && semver.iter().all(|n| n.parse::<u32>().is_ok()),
        "the version {v} is not MAJOR.MINOR.PATCH"
    );
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["version"].as_str(), Some(v.as_str()), "Chart.yaml version");
    assert_eq!(chart["appVersion"].as_str(), Some(v.as_str()), "Chart.yaml appVersion");
    // The chart's image tag defaults to its appVersion.
    let values = yaml(&format!("{CHART}/values.yaml"));
    assert_eq!(values["image"]["repository"].as_str(), Some(IMAGE));
    assert_eq!(values["image"]["tag"].as_str(), Some(""), "values.yaml pins a tag");
    for path in [
        "manifests/base/kustomization.yaml",
        "manifests/overlays/local/kustomization.yaml",
    ] {
        assert_eq!(kustomization_tag(path), v, "{path}");
    }
    // The Dockerfile's default VERSION (both stages that label the image).
    let dockerfile = read("Dockerfile");
    let defaults: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ARG VERSION="))
        .collect();
    assert!(!defaults.is_empty(), "the Dockerfile has no ARG VERSION=");
    assert!(
        defaults.iter().all(|d| *d == v),
        "Dockerfile ARG VERSION={defaults:?}, want {v}"
    );
    assert!(
        read("CHANGELOG.md").contains(&format!("\n## [{v}] - ")),
        "CHANGELOG.md has no section for {v}"
    );
    // The docs install this version: release URLs, chart versions, image tags, Git refs.
    for (file, what, prefix, end) in [
        ("docs/install.md", "release URL", "releases/download/v", '/'),
        ("docs/install.md", "chart --version", "--version ", ' '),
        ("docs/install.md", "image tag", "workload-identity-webhook:", ' '),
        ("README.md", "chart --version", "--version ", ' '),
        ("manifests/README.md", "Git ref", "?ref=v", '\''),
    ] {
        let doc = read(file);
        let found: BTreeSet<&str> = doc
            .match_indices(prefix)
            .map(|(i, _)| {
                let rest = &doc[i + prefix.len()..];
                rest[..rest.find([end, '\n', '`', '\'', '@']).unwrap_or(rest.len())].trim_end_matches('.')
            })
            .filter(|found| found.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(found, BTreeSet::from([v.as_str()]), "{file}: versions in each {what}");
    }
    // A release tag on this commit names the same version.
    if let Ok(output) = Command::new("git")
        .args(["tag", "--points-at", "HEAD", "v*"])
        .current_dir(root())
        .output()
    {
        for tag in String::from_utf8_lossy(&output.stdout).lines() {
            assert_eq!(tag, format!("v{v}"), "tag {tag} on HEAD");
        }
    }
}

// In a module of their own so that scripts/test.sh runs them after the dry run (`dry_run::`).
mod dry_run {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::var_os("WIW_RELEASE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target/release-dry-run"));
        assert!(
            dir.join("SHA256SUMS").is_file(),
            "{} holds no dry run: run scripts/release.sh --dry-run first",
            dir.display()
        );
        dir
    }

    fn platform() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "linux-amd64",
            "aarch64" => "linux-arm64",
            other => panic!("no release platform for {other}"),
        }
    }

    fn rust_target() -> &'static str {
        match platform() {
            "linux-amd64" => "x86_64-unknown-linux-musl",
            _ => "aarch64-unknown-linux-musl",
        }
    }

    /// The binaries of the workspace and the package of each.
    fn binaries() -> Vec<(String, String)> {
        let metadata = cargo_metadata();
        let mut bins = Vec::new();
        for package in metadata["packages"].as_array().unwrap() {
            for target in package["targets"].as_array().unwrap() {
                if target["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                    bins.push((
                        target["name"].as_str().unwrap().to_owned(),
                        package["name"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        bins.sort();
        bins
    }

    /// The files of a tar archive (`tar -t`), without directories.
    fn tar_list(archive: &Path) -> BTreeSet<String> {
        run("tar", &["-tvf", archive.to_str().unwrap()])
            .lines()
            .filter(|l| !l.starts_with('d'))
            .map(|l| l.rsplit(' ').next().unwrap().trim_start_matches("./").to_owned())
            .collect()
    }

    fn tar_file(archive: &Path, member: &str) -> Vec<u8> {
        let output = Command::new("tar")
            .args(["-xOf", archive.to_str().unwrap(), member])
            .output()
            .unwrap();
        assert!(output.status.success(), "{member} not in {}", archive.display());
        output.stdout
    }

    #[test]
    fn every_asset_is_there_and_in_the_checksums() {
        let dir = dir();
        let v = version();
        let (os, arch) = platform().split_once('-').unwrap();
        let mut want: BTreeSet<String> = OVERLAYS.iter().map(|o| format!("install-{o}.yaml")).collect();
        want.insert(format!("workload-identity-webhook-{v}.tgz"));
        want.insert(format!("{PLUGIN}_v{v}_{os}_{arch}.tar.gz"));
        want.insert(format!("workload-identity-webhook_v{v}_{os}_{arch}.tar.gz"));
        want.insert("workload-identity.yaml".into());
        for (bin, _) in binaries() {
            want.insert(format!("sbom-{bin}-{}.cdx.json", platform()));
        }
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let listed: BTreeSet<String> = sums
            .lines()
            .map(|l| l.split_once("  ").expect("sha256sum format").1.to_owned())
            .collect();
        assert_eq!(listed, want, "SHA256SUMS lists other files than the release's assets");
        let mut present: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| dir.join(name).is_file())
            .collect();
        present.remove("SHA256SUMS");
        assert_eq!(present, want, "the folder holds other files than the release's assets");
        // Each checksum is right (sha256sum --check, as users run it).
        let check = Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
        assert!(
            dir.join(format!("images/image-{}.oci.tar", platform())).is_file(),
            "no image archive"
        );
    }

    /// The crates `cargo tree` puts into BIN's binary for TARGET: normal dependencies only (no
    /// dev-, no build-dependencies, no proc-macros, which run in the compiler), as "name version".
    fn crates_in_binary(package: &str, target: &str) -> BTreeSet<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(
            &cargo,
            &[
                "tree",
                "--locked",
                "-p",
                package,
                "--target",
                target,
                "-e",
                "normal,no-proc-macro",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ],
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap();
            let version = words.next().unwrap().trim_start_matches('v');
            format!("{name} {version}")
        })
        .collect()
    }

    #[test]
    fn each_sbom_lists_every_crate_in_its_binary_and_no_other() {
        let dir = dir();
        for (bin, package) in binaries() {
            let path = dir.join(format!("sbom-{bin}-{}.cdx.json", platform()));
            let sbom: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(sbom["bomFormat"], "CycloneDX", "{}", path.display());
            let subject = &sbom["metadata"]["component"];
            let mut listed = BTreeSet::from([format!(
                "{} {}",
                subject["name"].as_str().unwrap(),
                subject["version"].as_str().unwrap()
            )]);
            for component in sbom["components"].as_array().unwrap() {
                listed.insert(format!(
                    "{} {}",
                    component["name"].as_str().unwrap(),
                    component["version"].as_str().unwrap()
                ));
                let purl = component["purl"].as_str().unwrap_or_default();
                assert!(purl.starts_with("pkg:cargo/"), "{}: purl {purl}", path.display());
            }
            let want = crates_in_binary(&package, rust_target());
            let missing: Vec<_> = want.difference(&listed).collect();
            let extra: Vec<_> = listed.difference(&want).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{}: crates in the binary missing from the SBOM: {missing:?}; listed but not in the binary: {extra:?}",
                path.display()
            );
        }
    }

    #[test]
    fn the_install_manifests_are_the_overlays_with_the_release_image() {
        let dir = dir();
        let image = format!("{IMAGE}:{}", version());
        for overlay in OVERLAYS {
            let rendered = std::fs::read_to_string(dir.join(format!("install-{overlay}.yaml"))).unwrap();
            let kustomize = run("kubectl", &["kustomize", &format!("manifests/overlays/{overlay}")]);
            assert_eq!(
                rendered, kustomize,
                "install-{overlay}.yaml is not `kubectl kustomize` of the overlay"
            );
            let images: BTreeSet<&str> = rendered
                .lines()
                .filter_map(|l| l.trim().strip_prefix("image: "))
                .filter(|i| i.contains("workload-identity"))
                .collect();
            assert_eq!(images, BTreeSet::from([image.as_str()]), "install-{overlay}.yaml");
        }
    }

    #[test]
    fn the_chart_package_lints_strict_and_carries_the_version() {
        let dir = dir();
        let v = version();
        let package = dir.join(format!("workload-identity-webhook-{v}.tgz"));
        let helm = tools::tool("helm");
        let package = package.to_str().unwrap();
        let (ok, _, text) = tools::run(&helm, &["lint", "--strict", package]);
        assert!(ok && text.contains("0 chart(s) failed"), "{text}");
        let (ok, chart, text) = tools::run(&helm, &["show", "chart", package]);
        assert!(ok, "{text}");
        let chart: Value = serde_yaml_ng::from_str(&chart).unwrap();
        assert_eq!(chart["version"].as_str(), Some(v.as_str()));
        assert_eq!(chart["appVersion"].as_str(), Some(v.as_str()));
    }

    #[test]
    fn the_image_is_the_dockerfiles_package_target_with_both_binaries() {
        let archive = dir().join(format!("images/image-{}.oci.tar", platform()));
        let index: Value = serde_json::from_slice(&tar_file(&archive, "index.json")).unwrap();
        let descriptor = &index["manifests"][0];
        assert_eq!(
            descriptor["annotations"]["org.opencontainers.image.ref.name"].as_str(),
            Some(format!("{IMAGE}:{}", version()).as_str())
        );
        let blob = |digest: &Value| {
            tar_file(
                &archive,
                &format!(
                    "blobs/sha256/{}",
                    digest.as_str().unwrap().trim_start_matches("sha256:")
                ),
            )
        };
        let manifest: Value = serde_json::from_slice(&blob(&descriptor["digest"])).unwrap();
        let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["Entrypoint"], serde_json::json!(["/workload-identity-webhook"]));
        assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
        let labels = &c["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"].as_str(),
            Some(version().as_str())
        );
        let head = run("git", &["rev-parse", "HEAD"]);
        assert_eq!(labels["org.opencontainers.image.revision"].as_str(), Some(head.trim()));
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        // Fixed timestamps: the image is the same for every build of a commit.
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        // The files: the binaries and /etc/passwd, /etc/group; no shell, nothing else.
        let mut files = BTreeSet::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(tmp.path(), blob(&layer["digest"])).unwrap();
            files.extend(tar_list(tmp.path()));
        }
        let mut want: BTreeSet<String> = binaries().into_iter().map(|(bin, _)| bin).collect();
        want.extend(["etc/passwd".to_owned(), "etc/group".to_owned()]);
        assert_eq!(files, want);
    }

    #[test]
    fn the_release_binaries_carry_their_commit_and_date() {
        let dir = dir();
        let v = version();
        let (os, arch) = platform().split_once('-').unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let archive = dir.join(format!("workload-identity-webhook_v{v}_{os}_{arch}.tar.gz"));
        run(
            "tar",
            &["-xzf", archive.to_str().unwrap(), "-C", tmp.path().to_str().unwrap()],
        );
        let webhook = tmp.path().join("workload-identity-webhook");
        let json: Value = serde_json::from_str(&run(webhook.to_str().unwrap(), &["version", "-o", "json"])).unwrap();
        assert_eq!(json["version"].as_str(), Some(v.as_str()));
        assert_eq!(
            json["revision"].as_str(),
            Some(run("git", &["rev-parse", "HEAD"]).trim())
        );
        assert_eq!(
            json["buildDate"].as_str(),
            Some(run("git", &["show", "-s", "--format=%cI", "HEAD"]).trim())
        );
        assert_eq!(json["target"].as_str(), Some(rust_target()));
        // Every binary of the workspace is in the archive.
        let names: BTreeSet<String> = binaries().into_iter().map(|(bin, _)| bin).collect();
        assert_eq!(tar_list(&archive), names);
    }

    #[test]
    fn the_krew_manifest_installs_the_plugin_archive() {
        let dir = dir();
        let v = version();
        let (os, arch) = platform().split_once('-').unwrap();
        let krew: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("workload-identity.yaml")).unwrap()).unwrap();
        assert_eq!(krew["kind"], "Plugin");
        assert_eq!(krew["metadata"]["name"], "workload-identity");
        assert_eq!(krew["spec"]["version"].as_str(), Some(format!("v{v}").as_str()));
        let platforms = krew["spec"]["platforms"].as_array().unwrap();
        assert_eq!(platforms.len(), 1, "the dry run builds one platform");
        let p = &platforms[0];
        assert_eq!(p["selector"]["matchLabels"]["os"].as_str(), Some(os));
        assert_eq!(p["selector"]["matchLabels"]["arch"].as_str(), Some(arch));
        let file = format!("{PLUGIN}_v{v}_{os}_{arch}.tar.gz");
        assert!(
            p["uri"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/releases/download/v{v}/{file}"))
        );
        let sum = run("sha256sum", &[dir.join(&file).to_str().unwrap()]);
        assert_eq!(p["sha256"].as_str(), sum.split_whitespace().next());
        assert_eq!(p["bin"], PLUGIN);
        assert_eq!(
            tar_list(&dir.join(&file)),
            BTreeSet::from([PLUGIN.to_owned(), "LICENSE".to_owned()])
        );
    }

    /// The quoted word after each `flag '` or `flag ` in the text.
    fn flag_values<'a>(text: &'a str, flag: &str) -> BTreeSet<&'a str> {
        text.match_indices(flag)
            .map(|(i, _)| {
                let rest = text[i + flag.len()..].trim_start_matches([' ', '\'']);
                &rest[..rest.find([' ', '\'', '\n']).unwrap_or(rest.len())]
            })
            .collect()
    }

    #[test]
    fn the_install_doc_names_what_the_release_publishes() {
        let dir = dir();
        let v = version();
        let doc = read("docs/install.md");
        // Every asset the doc downloads is one the release makes (names with <os> and <arch>
        // stand for each platform; the dry run has one).
        let (os, arch) = platform().split_once('-').unwrap();
        let prefix = format!("releases/download/v{v}/");
        for (i, _) in doc.match_indices(&prefix) {
            let rest = &doc[i + prefix.len()..];
            let name = &rest[..rest.find([' ', '\n', '`']).unwrap()];
            let name = name.replace("<os>", os).replace("<arch>", arch);
            assert!(
                dir.join(&name).is_file(),
                "docs/install.md downloads {name}, which the release does not make"
            );
        }
        // The signing identity and issuer the doc verifies are the release workflow's.
        let workflow = yaml(".github/workflows/release.yml");
        let env = &workflow["jobs"]["publish"]["env"];
        let regexp = env["IDENTITY_REGEXP"].as_str().unwrap();
        assert_eq!(
            flag_values(&doc, "--certificate-identity-regexp"),
            BTreeSet::from([regexp])
        );
        assert_eq!(
            flag_values(&doc, "--certificate-oidc-issuer"),
            BTreeSet::from([env["ISSUER"].as_str().unwrap()])
        );
        // ... and it accepts the identity of this version's release run, and nothing else.
        let identity =
            |repo: &str, r#ref: &str| format!("https://github.com/{repo}/.github/workflows/release.yml@{ref}");
        let matches = |subject: &str| {
            Command::new("grep")
                .args(["-Eq", regexp])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(subject.as_bytes())?;
                    child.wait()
                })
                .unwrap()
                .success()
        };
        let repo = "workload-identity-webhook/workload-identity-webhook";
        assert!(matches(&identity(repo, &format!("refs/tags/v{v}"))));
        assert!(
            !matches(&identity(repo, "refs/heads/main")),
            "a branch build must not verify"
        );
        assert!(!matches(&identity(
            "someone/workload-identity-webhook",
            &format!("refs/tags/v{v}")
        )));
        // The chart the doc installs is where the workflow pushes it.
        let registry = workflow["env"]["REGISTRY"].as_str().unwrap();
        let chart = format!("oci://{registry}/charts/workload-identity-webhook");
        assert!(doc.contains(&format!(
            "helm install workload-identity-webhook {chart} \\\n  --version {v}"
        )));
        assert_eq!(registry, IMAGE.rsplit_once('/').unwrap().0);
    }

    #[test]
    fn the_install_docs_own_kustomization_renders_the_release_manifest() {
        let dir = dir();
        let v = version();
        let doc = read("docs/install.md");
        let start = doc
            .find("# my-install/kustomization.yaml")
            .expect("the kustomization example");
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let url = format!(
            "https://github.com/workload-identity-webhook/workload-identity-webhook/releases/download/v{v}/install-cluster-wide.yaml"
        );
        assert!(example.contains(&url), "{example}");
        // The downloaded asset in place of its URL, a config.yaml and a digest.
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.join("install-cluster-wide.yaml"),
            tmp.path().join("install-cluster-wide.yaml"),
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("kustomization.yaml"),
            example
                .replace(&url, "install-cluster-wide.yaml")
                .replace("sha256:<digest>", &digest),
        )
        .unwrap();
        let config = "aws: {region: eu-west-1}\nidentities: []\n";
        std::fs::write(tmp.path().join("config.yaml"), config).unwrap();
        let rendered = run("kubectl", &["kustomize", tmp.path().to_str().unwrap()]);
        let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let configmap = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "workload-identity-webhook")
            .expect("the webhook's ConfigMap");
        assert_eq!(configmap["data"]["config.yaml"].as_str(), Some(config));
        assert_eq!(configmap["metadata"]["namespace"], "workload-identity-system");
        let images: BTreeSet<&str> = rendered
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .filter(|i| i.contains("workload-identity"))
            .collect();
        assert_eq!(images, BTreeSet::from([format!("{IMAGE}@{digest}").as_str()]));
    }
}
