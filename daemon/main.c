/* main.c - placeholder until the daemon lands. */
#include <stdio.h>

int main(void)
{
    fputs("ckptpushd: not built yet\n", stderr);
    return 1;
}
