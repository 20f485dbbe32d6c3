/* nonewprivs stand-in: installed setuid-root; prints the effective uid so the
 * NoNewPrivs specs can tell whether the setuid bit took effect ("Effective uid: 0")
 * or was blocked by no_new_privs ("Effective uid: 1000"). */
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
