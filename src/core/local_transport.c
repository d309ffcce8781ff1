/* SPDX-License-Identifier: MIT */
/*
 * The in-process transport: a driver object talks to a device object by direct calls. No
 * marshalling, so tests and the demonstration see negotiation itself and nothing else.
 */
#include <virtue/device.h>
#include <virtue/driver.h>

static uint32_t local_device_id(void *t)
{
	return vt_device_id(t);
}

static uint64_t local_get_device_features(void *t)
{
	return vt_device_offered_features(t);
}

static int local_set_driver_features(void *t, uint64_t features)
{
	return vt_device_set_driver_features(t, features);
}

static uint8_t local_get_status(void *t)
{
	return vt_device_status(t);
}

static int local_set_status(void *t, uint8_t status)
{
	return vt_device_set_status(t, status);
}

static int local_read_config(void *t, uint32_t offset, void *buf, uint32_t len)
{
	return vt_device_config_read(t, offset, buf, len);
}

static int local_write_config(void *t, uint32_t offset, const void *buf, uint32_t len)
{
	return vt_device_config_write(t, offset, buf, len);
}

static uint32_t local_config_generation(void *t)
{
	return vt_device_config_generation(t);
}

const struct vt_transport_ops vt_local_transport_ops = {
	.device_id = local_device_id,
	.get_device_features = local_get_device_features,
	.set_driver_features = local_set_driver_features,
	.get_status = local_get_status,
	.set_status = local_set_status,
	.read_config = local_read_config,
	.write_config = local_write_config,
	.config_generation = local_config_generation,
};
