/* placeholder: being written */
typedef int vt_placeholder_t;
