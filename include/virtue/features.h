/* SPDX-License-Identifier: MIT */
/*
 * Feature bits by name, and the spec's dependency rules between them. Names are the spec's without
 * the VIRTIO_F_ / VIRTIO_<DEV>_F_ prefix ("VERSION_1", "ACCESS_PLATFORM", "FLUSH"); device-specific
 * bits are looked up for the given device type, so bit 5 reads "RO" for a block device and "MAC"
 * for a network device.
 */
#ifndef VIRTUE_FEATURES_H
#define VIRTUE_FEATURES_H

#include <stddef.h>
#include <stdint.h>

/* The name of @bit for a device of type @device_id (VIRTIO_ID_*; 0: transport bits only), or NULL.
 */
const char *vt_feature_name(uint32_t device_id, unsigned int bit);

/* Looks a name up (with or without its VIRTIO_..._F_ prefix): 0, or -ENOENT. */
int vt_feature_parse(uint32_t device_id, const char *name, unsigned int *bit);

/*
 * Renders @features as names separated by single spaces, unknown bits as "bit<N>", nothing set as
 * "(none)". Returns the length of the full string, like snprintf; the output is always
 * NUL-terminated when @size > 0.
 */
size_t vt_features_str(uint32_t device_id, uint64_t features, char *buf, size_t size);

/* "net", "blk", ... or NULL for an unknown device type. */
const char *vt_device_type_name(uint32_t device_id);

/* Renders a device status byte as "ACKNOWLEDGE DRIVER FEATURES_OK ...", like vt_features_str. */
size_t vt_status_str(uint8_t status, char *buf, size_t size);

/*
 * One spec rule: accepting @bit requires every bit of @requires_all and, if @requires_any is not 0,
 * at least one bit of @requires_any. @device_id 0 applies to every device type.
 */
struct vt_feature_rule {
	uint32_t device_id;
	uint8_t bit;
	uint64_t requires_all;
	uint64_t requires_any;
	const char *spec; /* where the spec says so */
};

/* The whole table, for tests and tools. */
const struct vt_feature_rule *vt_feature_rules(size_t *count);

/*
 * Checks @features against every rule for @device_id: 0, or -EINVAL with *broken (if not NULL)
 * set to the first rule violated.
 */
int vt_features_check_deps(uint32_t device_id, uint64_t features,
			   const struct vt_feature_rule **broken);

/*
 * The largest subset of @features that satisfies the rules: drops every bit whose requirements
 * are missing, repeatedly, until nothing changes. What a driver does with the bits it would like.
 */
uint64_t vt_features_close_deps(uint32_t device_id, uint64_t features);

#endif
