//! A library built with abi_stable that exports some other interface's root module: what an
//! operator gets by pointing `library:` at the wrong `.so`, or at an adapter built against
//! an incompatible `aerie-adapter-api`. aerie must refuse it at load time with one clear line
//! (abi_stable's own report of a layout mismatch runs to thousands of lines).
#![allow(non_local_definitions, non_camel_case_types)]

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule, package_version_strings,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RStr, StableAbi,
};

/// Not an aerie adapter module: one field of a different type.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ForeignModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct ForeignModule {
    /// Greets.
    #[sabi(last_prefix_field)]
    pub greeting: extern "C" fn() -> RStr<'static>,
}

impl RootModule for ForeignModule_Ref {
    declare_root_module_statics! {ForeignModule_Ref}
    const BASE_NAME: &'static str = "aerie_adapter";
    const NAME: &'static str = "aerie adapter";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn greeting() -> RStr<'static> {
    RStr::from_str("hello")
}

#[export_root_module]
fn root_module() -> ForeignModule_Ref {
    ForeignModule { greeting }.leak_into_prefix()
}
