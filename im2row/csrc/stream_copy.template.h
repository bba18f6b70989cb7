/* memcpy whose whole 64-byte destination lines are streamed past the caches and whose
 * partial first and last lines are stored plainly: a streamed part of a line reaches memory
 * alone, as a read-modify-write of the line. Instantiated per ISA by defining SC_NAME and
 * SC_LINE(d, s) (stream the 64 bytes at s to the 64-byte-aligned d) before inclusion; the
 * includer has <stdint.h> and <string.h> (gemm.h). */
void SC_NAME(void *dst, const void *src, size_t bytes)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (size_t)(-(uintptr_t)d & 63);
    if (head < bytes) {
        memcpy(d, s, head);
        d += head; s += head; bytes -= head;
        for (; bytes >= 64; bytes -= 64, d += 64, s += 64)
            SC_LINE(d, s);
    }
    memcpy(d, s, bytes);
}

#undef SC_NAME
#undef SC_LINE
