//! One module per subcommand.

pub mod demo;
mod image_input;
pub mod info;
pub mod keygen;
pub mod measure;
mod measuring;
pub mod run;
pub mod sign;
