/* C guest built with Debian's clang + wasi-libc (see ../../build.sh).
 *
 * main prints "hello from C". The extra export `greet` lets tests run an
 * entrypoint of the form `/hello.wasm#greet`: it uses write(2) directly so it
 * works even when called without main having run. */
#include <stdio.h>
#include <unistd.h>

__attribute__((export_name("greet"))) void greet(void) {
    static const char msg[] = "greet called\n";
    (void)write(1, msg, sizeof msg - 1);
}

int main(void) {
    puts("hello from C");
    return 0;
}
