//! The life of an instance after its start ([`crate::launch`]): stop,
//! reboot, info, balloon, list and cleanup.

mod balloon;
mod console;
mod info;
mod reboot;
mod stop;

pub use balloon::{BalloonError, Ballooned, balloon};
pub use console::{Console, ConsoleError, Consoles, consoles, prepare_console, resume_for_console};
pub use info::{DeviceSummary, InfoError, InstanceInfo, InstanceState, info, info_all, list};
pub use reboot::{RebootError, reboot, spec_from_record};
pub use stop::{Ending, StopError, StopOptions, cleanup, press_power_button, stop};
