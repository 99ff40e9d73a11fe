/* MPI_IN_PLACE as the system's mpi.h defines it (a macro, so not in
 * rsmpi's generated bindings). */
#include <mpi.h>

void *rime_mpi_in_place(void) { return MPI_IN_PLACE; }
