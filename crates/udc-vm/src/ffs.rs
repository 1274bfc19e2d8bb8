// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Which FunctionFS the guest loads: the image's own usb_f_fs.ko (stock),
//! or one that images/ffs.sh builds for the image's kernel from Debian's
//! f_fs of some 6.12 version or from a kernel tree, with patches applied
//! (docs/ffs.md). A built module goes into the boot's extra initramfs in
//! place of the stock one; init then prints which f_fs it loaded with the
//! module's srcversion, and [`Ffs::check_console`] holds the boot to it,
//! so that no result is read against the wrong module.

use std::path::{Path, PathBuf};

use crate::locate::{self, Image};
use crate::Error;

/// What the command line asked for.
#[derive(Debug, Default, Clone)]
pub struct FfsArgs {
    /// Patches, applied in order.
    pub patches: Vec<PathBuf>,
    /// A kernel tree whose f_fs to build.
    pub source: Option<PathBuf>,
    /// The f_fs of this Debian 6.12 version (e.g. 6.12.43).
    pub version: Option<String>,
}

impl FfsArgs {
    pub fn is_stock(&self) -> bool {
        self.patches.is_empty() && self.source.is_none() && self.version.is_none()
    }
}

/// A `key: value` file: the image's build.info (images/build.sh) or a
/// built module's ffs.info (images/ffs.sh). A key may repeat.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo(Vec<(String, String)>);

impl BuildInfo {
    pub fn parse(text: &str) -> BuildInfo {
        BuildInfo(
            text.lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    pub fn read(image: &Image) -> Result<BuildInfo, Error> {
        let path = image.dir.join("build.info");
        std::fs::read_to_string(&path)
            .map(|t| BuildInfo::parse(&t))
            .map_err(|e| {
                Error::Missing(format!(
                    "{}: {e} (an image from an older images/build.sh: build it again)",
                    path.display()
                ))
            })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in file order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::Missing(format!("the image's build.info has no {key}")))
    }
}

/// One file added to the guest's initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Path inside the guest, without the leading slash.
    pub path: String,
    pub data: Vec<u8>,
}

/// The FunctionFS of a boot.
#[derive(Debug, Clone)]
pub struct Ffs {
    /// One line: stock, or the source and each patch with its sha256.
    pub description: String,
    /// The srcversion the guest must report for usb_f_fs (a built module).
    pub srcversion: Option<String>,
    /// Files that replace the stock module and its description.
    pub files: Vec<GuestFile>,
}

/// The `udc-init: f_fs:` line init prints (images/init).
const CONSOLE_PREFIX: &str = "udc-init: f_fs: ";

impl Ffs {
    /// The image's own module, as images/build.sh described it.
    pub fn stock(info: &BuildInfo) -> Ffs {
        Ffs {
            description: info
                .get("ffs-stock")
                .unwrap_or("stock (no build.info)")
                .to_string(),
            srcversion: None,
            files: Vec::new(),
        }
    }

    /// The line for KTAP, JUnit and the runner's own output.
    pub fn summary(&self) -> String {
        match &self.srcversion {
            Some(v) => format!("{}; srcversion {v}", self.description),
            None => self.description.clone(),
        }
    }

    /// Checks what the guest printed: the f_fs it loaded must be this one.
    /// Returns the guest's line.
    pub fn check_console(&self, console: &str) -> Result<String, String> {
        let Some(line) = console.lines().find_map(|l| {
            l.find(CONSOLE_PREFIX)
                .map(|i| l[i + CONSOLE_PREFIX.len()..].trim().to_string())
        }) else {
            return Err("the guest did not say which f_fs it loaded (no 'udc-init: f_fs:' line)".into());
        };
        let (desc, loaded) = line.rsplit_once("; srcversion ").unwrap_or((line.as_str(), "?"));
        if desc != self.description {
            return Err(format!(
                "the guest loaded a different f_fs: it says '{desc}', expected '{}'",
                self.description
            ));
        }
        if let Some(want) = &self.srcversion {
            if loaded != want {
                return Err(format!(
                    "the guest's usb_f_fs has srcversion {loaded}, the module built for this run {want}"
                ));
            }
        }
        Ok(line)
    }
}

/// The f_fs a run asks for, built (or taken from the cache) by
/// images/ffs.sh for `image`'s kernel.
pub fn choose(args: &FfsArgs, image: &Image) -> Result<Ffs, Error> {
    let info = BuildInfo::read(image)?;
    if args.is_stock() {
        return Ok(Ffs::stock(&info));
    }
    let module = info.need("ffs-module")?.to_string();
    if module == "builtin" {
        return Err(Error::Usage(format!(
            "{} has f_fs built in: a module of our own cannot replace it (build the kernel with CONFIG_USB_F_FS=m)",
            info.need("kernel")?
        )));
    }
    let kdir = info.need("kdir")?.to_string();
    let root = locate::repo_root().ok_or_else(|| {
        Error::Missing("no virtio-udc checkout found for images/ffs.sh (set VIRTIO_UDC_ROOT)".into())
    })?;
    let script_args = ffs_script_args(args, &info, &kdir)?;
    let dir = locate::run_build_script(&root.join("images/ffs.sh"), &script_args)?;
    let built = std::fs::read_to_string(dir.join("ffs.info"))
        .map_err(|e| Error::Missing(format!("{}/ffs.info: {e}", dir.display())))?;
    let built = BuildInfo::parse(&built);
    let ko = std::fs::read(dir.join("usb_f_fs.ko"))
        .map_err(|e| Error::Missing(format!("{}/usb_f_fs.ko: {e}", dir.display())))?;
    let description = describe(&built, &info);
    Ok(Ffs {
        srcversion: Some(built.need("srcversion")?.to_string()),
        files: vec![
            GuestFile {
                path: module.trim_start_matches('/').to_string(),
                data: ko,
            },
            GuestFile {
                path: "etc/udc/ffs".into(),
                data: format!("{description}\n").into_bytes(),
            },
        ],
        description,
    })
}

/// images/ffs.sh's arguments: the source (the given tree or version, else
/// the booted kernel's own: Debian's source of its version, or its tree).
fn ffs_script_args(args: &FfsArgs, info: &BuildInfo, kdir: &str) -> Result<Vec<String>, Error> {
    let mut a = vec!["--kdir".to_string(), kdir.to_string()];
    match (&args.source, &args.version) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "--ffs-source and --ffs-version do not go together".into(),
            ))
        }
        (Some(s), None) => a.extend(["--source".into(), abs(s)]),
        (None, Some(v)) => a.extend(["--debian".into(), v.clone()]),
        (None, None) => {
            let id = info.need("kernel-id")?;
            if let Some(v) = id.strip_prefix("debian-") {
                a.extend(["--debian".into(), v.to_string()]);
            } else if Path::new(kdir)
                .join("drivers/usb/gadget/function/f_fs.c")
                .is_file()
            {
                a.extend(["--source".into(), kdir.to_string()]);
            } else {
                return Err(Error::Usage(format!(
                    "{} comes with headers only: say whose f_fs to patch with --ffs-source TREE or --ffs-version VERSION",
                    info.need("kernel")?
                )));
            }
        }
    }
    for p in &args.patches {
        if !p.is_file() {
            return Err(Error::Usage(format!("--ffs-patch {}: no such file", p.display())));
        }
        a.extend(["--patch".into(), abs(p)]);
    }
    Ok(a)
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// "f_fs of Debian linux-source-6.12 6.12.118-1~deb12u1 with 0001-x.patch
/// (sha256 1234abcd5678), built for 6.12.118+deb12-amd64".
fn describe(built: &BuildInfo, image: &BuildInfo) -> String {
    let patches: Vec<&str> = built.all("patch").collect();
    let mut d = format!("f_fs of {}", built.get("source").unwrap_or("?"));
    if !patches.is_empty() {
        let list: Vec<String> = patches
            .iter()
            .map(|p| match p.split_once(" sha256:") {
                Some((name, sum)) => format!("{name} (sha256 {})", &sum[..sum.len().min(16)]),
                None => p.to_string(),
            })
            .collect();
        d += &format!(" with {}", list.join(", "));
    }
    d + &format!(", built for {}", image.get("release").unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_info() -> BuildInfo {
        BuildInfo::parse(
            "kernel: Debian 6.12.118+deb12\nkernel-id: debian-6.12.118+deb12\nrelease: 6.12.118+deb12-amd64\n\
             kdir: /c/kernel/h\nffs-module: /lib/modules/r/kernel/drivers/usb/gadget/function/usb_f_fs.ko\n\
             ffs-stock: stock usb_f_fs.ko of Debian 6.12.118+deb12 (sha256 0123456789abcdef)\n",
        )
    }

    #[test]
    fn a_debian_kernel_patches_its_own_version_unless_told_otherwise() {
        let info = image_info();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0001-fix.patch");
        std::fs::write(&p, "x").unwrap();
        let args = FfsArgs {
            patches: vec![p.clone()],
            ..Default::default()
        };
        let a = ffs_script_args(&args, &info, "/c/kernel/h").unwrap();
        assert_eq!(a[..4], ["--kdir", "/c/kernel/h", "--debian", "6.12.118+deb12"]);
        assert_eq!(a[4..], ["--patch".to_string(), p.display().to_string()]);
        let args = FfsArgs {
            version: Some("6.12.43".into()),
            ..Default::default()
        };
        assert_eq!(
            ffs_script_args(&args, &info, "/k").unwrap()[2..],
            ["--debian", "6.12.43"]
        );
        let args = FfsArgs {
            version: Some("6.12.43".into()),
            source: Some("/src".into()),
            ..Default::default()
        };
        assert!(ffs_script_args(&args, &info, "/k").is_err());
        let args = FfsArgs {
            patches: vec![dir.path().join("missing.patch")],
            ..Default::default()
        };
        let e = ffs_script_args(&args, &info, "/k").unwrap_err().to_string();
        assert!(e.contains("missing.patch: no such file"), "{e}");
    }

    #[test]
    fn headers_alone_need_a_source() {
        let mut info = image_info();
        info.0.retain(|(k, _)| k != "kernel-id");
        info.0.push(("kernel-id".into(), "own-1234".into()));
        let dir = tempfile::tempdir().unwrap();
        let e = ffs_script_args(&FfsArgs::default(), &info, &dir.path().display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ffs-source"), "{e}");
        std::fs::create_dir_all(dir.path().join("drivers/usb/gadget/function")).unwrap();
        std::fs::write(dir.path().join("drivers/usb/gadget/function/f_fs.c"), "").unwrap();
        let kd = dir.path().display().to_string();
        assert_eq!(
            ffs_script_args(&FfsArgs::default(), &info, &kd).unwrap()[2..],
            ["--source".to_string(), kd]
        );
    }

    #[test]
    fn the_description_names_the_source_and_every_patch() {
        let built = BuildInfo::parse(
            "source: Debian linux-source-6.12 6.12.118-1~deb12u1\n\
             patch: 0001-a.patch sha256:aaaaaaaaaaaaaaaaaaaaaaaa\npatch: 0002-b.patch sha256:bbbb\n\
             srcversion: ABC\n",
        );
        // "patch" repeats: every one is kept, in order.
        assert_eq!(
            describe(&built, &image_info()),
            "f_fs of Debian linux-source-6.12 6.12.118-1~deb12u1 with 0001-a.patch (sha256 aaaaaaaaaaaaaaaa), \
             0002-b.patch (sha256 bbbb), built for 6.12.118+deb12-amd64"
        );
    }

    #[test]
    fn the_console_must_name_the_module_that_was_built() {
        let ffs = Ffs {
            description: "f_fs of X with 0001-a.patch (sha256 aa), built for R".into(),
            srcversion: Some("ABC123".into()),
            files: vec![],
        };
        let good = "[ 1.2] udc-init: loaded usb_f_fs\n[ 1.3] udc-init: f_fs: f_fs of X with 0001-a.patch (sha256 aa), built for R; srcversion ABC123\n";
        assert!(ffs.check_console(good).is_ok());
        let other = good.replace("ABC123", "DEF456");
        assert!(ffs
            .check_console(&other)
            .unwrap_err()
            .contains("srcversion DEF456"));
        let stock =
            "udc-init: f_fs: stock usb_f_fs.ko of Debian 6.12.118+deb12 (sha256 01); srcversion none\n";
        assert!(ffs.check_console(stock).unwrap_err().contains("different f_fs"));
        assert!(ffs.check_console("nothing\n").is_err());
        let s = Ffs::stock(&BuildInfo::parse(
            "ffs-stock: stock usb_f_fs.ko of Debian 6.12.118+deb12 (sha256 01)\n",
        ));
        assert!(s.check_console(stock).is_ok());
    }
}
