// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The VM scenario suite (`udc-gadget test`): what a case is (a named
//! function of the context, what it needs of the controller, and whether
//! it runs without being named), the case table (`plan`), and the run of a
//! plan with its KTAP output (`run`).

mod plan;
mod run;

pub use plan::all;
pub use run::{run_suite, select_cases};

use crate::error::Error;
use crate::support::Ctx;

pub(crate) type CaseFn = fn(&mut Ctx) -> Result<(), Error>;

/// What a case needs of the controller (the config space's
/// VIRTIO_UDC_CONFIG_F_SG): FunctionFS's DMABUF interface exists only on a
/// UDC with scatter-gather, and its refusal only on one without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Any,
    Sg,
    NoSg,
}

impl Needs {
    pub fn admits(self, sg: bool) -> bool {
        match self {
            Needs::Any => true,
            Needs::Sg => sg,
            Needs::NoSg => !sg,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Needs::Any => "any controller",
            Needs::Sg => "a controller with scatter-gather",
            Needs::NoSg => "a controller without scatter-gather (vhost-device-udc --no-sg)",
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub needs: Needs,
    pub run: CaseFn,
    /// In the suite when no case is named (`udc-gadget test` alone). The
    /// others run when a --filter word or --cases names them: the
    /// reproducers of kernel bugs, which fail (or hang the guest) on a
    /// kernel that has the bug, and the DMABUF lifecycle matrix.
    pub default: bool,
}

pub(crate) const fn case(name: &'static str, needs: Needs, run: CaseFn) -> Case {
    Case {
        name,
        needs,
        run,
        default: true,
    }
}

/// A case that runs only when named (see [`Case::default`]).
pub(crate) const fn on_request(name: &'static str, needs: Needs, run: CaseFn) -> Case {
    Case {
        name,
        needs,
        run,
        default: false,
    }
}
