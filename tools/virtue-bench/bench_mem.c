typedef int vt_placeholder_t;
