//! With the `mpi` feature: compiles `src/in_place.c`, which hands Rust the
//! system mpi.h's `MPI_IN_PLACE` (an implementation's own sentinel pointer,
//! `(void *) 1` in Open MPI, `(void *) -1` in MPICH; rsmpi does not export
//! it), against the same MPI that mpi-sys builds against.

fn main() {
    #[cfg(feature = "mpi")]
    in_place_shim();
}

#[cfg(feature = "mpi")]
fn in_place_shim() {
    println!("cargo:rerun-if-changed=src/in_place.c");
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errs) => {
            for e in errs {
                println!("cargo:warning=looking for MPI: {e}");
            }
            panic!("rime-distributed's `mpi` feature needs the system MPI (libopenmpi-dev)");
        }
    };
    let mut build = cc::Build::new();
    build.file("src/in_place.c");
    match lib.mpicc {
        Some(mpicc) => {
            build.compiler(mpicc);
        }
        None => {
            for dir in &lib.include_paths {
                build.include(dir);
            }
        }
    }
    build.compile("rime_mpi_in_place");
}
