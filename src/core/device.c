/* SPDX-License-Identifier: MIT */
/*
 * Device-side negotiation and status (virtio 1.3 sections 2.1, 2.2 and 3.1). The rules come from
 * the shared dependency table (feature_rules.c); this file applies them at FEATURES_OK, runs the
 * status state machine and keeps config space with its generation.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <virtue/device.h>
#include <virtue/features.h>
#include <virtue/spec/virtio_config.h>

struct vt_device {
	pthread_mutex_t lock; /* everything below but status, which readers poll */
	uint32_t device_id;
	char name[32];
	uint64_t offered;
	uint64_t required;
	uint64_t driver_features; /* as last written by the driver */
	uint64_t negotiated;	  /* valid while FEATURES_OK is set */
	_Atomic uint8_t status;
	bool needs_reset_logged;
	uint8_t config[VT_DEVICE_CONFIG_MAX];
	uint32_t config_size;
	_Atomic uint32_t config_generation;
	const struct vt_device_ops *ops;
	void *opaque;
	const struct vt_log *log;
};

static const struct vt_device_ops no_ops;

int vt_device_new(const struct vt_device_params *params, struct vt_device **out)
{
	if (params->config_size > VT_DEVICE_CONFIG_MAX || (params->config_size && !params->config))
		return -EINVAL;
	struct vt_device *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	pthread_mutex_init(&dev->lock, NULL);
	dev->device_id = params->device_id;
	const char *type = vt_device_type_name(params->device_id);
	snprintf(dev->name, sizeof(dev->name), "%s",
		 params->name ? params->name : (type ? type : "virtio"));
	dev->offered = params->offered | VT_BIT(VIRTIO_F_VERSION_1);
	dev->required = params->required | VT_BIT(VIRTIO_F_VERSION_1);
	if (params->config_size)
		memcpy(dev->config, params->config, params->config_size);
	dev->config_size = params->config_size;
	dev->ops = params->ops ? params->ops : &no_ops;
	dev->opaque = params->opaque;
	dev->log = params->log;

	/* A device must itself satisfy the rules it enforces: refuse an inconsistent offer. */
	const struct vt_feature_rule *broken;
	if ((dev->required & ~dev->offered) ||
	    vt_features_check_deps(dev->device_id, dev->required, &broken) < 0) {
		vt_log(dev->log, VT_LOG_ERROR, "%s: required features not offered or inconsistent",
		       dev->name);
		vt_device_free(dev);
		return -EINVAL;
	}
	*out = dev;
	return 0;
}

void vt_device_free(struct vt_device *dev)
{
	if (!dev)
		return;
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

uint32_t vt_device_id(const struct vt_device *dev)
{
	return dev->device_id;
}

const char *vt_device_name(const struct vt_device *dev)
{
	return dev->name;
}

uint64_t vt_device_offered_features(const struct vt_device *dev)
{
	return dev->offered;
}

uint8_t vt_device_status(const struct vt_device *dev)
{
	return atomic_load_explicit(&((struct vt_device *)dev)->status, memory_order_acquire);
}

int vt_device_set_driver_features(struct vt_device *dev, uint64_t features)
{
	int ret = 0;
	pthread_mutex_lock(&dev->lock);
	uint8_t status = vt_device_status(dev);
	if (status & VIRTIO_CONFIG_S_FEATURES_OK) {
		/* 3.1.1: features are fixed once FEATURES_OK is set. */
		vt_log(dev->log, VT_LOG_WARN,
		       "%s: driver wrote features after FEATURES_OK; ignored (virtio 3.1.1)",
		       dev->name);
		ret = -EBUSY;
	} else if (!(status & VIRTIO_CONFIG_S_DRIVER)) {
		vt_log(dev->log, VT_LOG_WARN,
		       "%s: driver wrote features before setting DRIVER; ignored (virtio 3.1.1)",
		       dev->name);
		ret = -EPROTO;
	} else {
		dev->driver_features = features;
	}
	pthread_mutex_unlock(&dev->lock);
	return ret;
}

uint64_t vt_device_driver_features(const struct vt_device *dev)
{
	pthread_mutex_lock(&((struct vt_device *)dev)->lock);
	uint64_t f = dev->driver_features;
	pthread_mutex_unlock(&((struct vt_device *)dev)->lock);
	return f;
}

uint64_t vt_device_features(const struct vt_device *dev)
{
	pthread_mutex_lock(&((struct vt_device *)dev)->lock);
	uint64_t f = dev->negotiated;
	pthread_mutex_unlock(&((struct vt_device *)dev)->lock);
	return f;
}

/* Why @features cannot be accepted, or NULL when they can (the model's veto aside). */
static const char *features_problem(const struct vt_device *dev, uint64_t features, char *buf,
				    size_t size)
{
	if (features & ~dev->offered) {
		char names[256];
		vt_features_str(dev->device_id, features & ~dev->offered, names, sizeof(names));
		snprintf(buf, size,
			 "driver accepted features the device did not offer: %s "
			 "(virtio 2.2.1)",
			 names);
		return buf;
	}
	if ((features & dev->required) != dev->required) {
		char names[256];
		vt_features_str(dev->device_id, dev->required & ~features, names, sizeof(names));
		snprintf(buf, size, "driver did not accept features this device requires: %s",
			 names);
		return buf;
	}
	const struct vt_feature_rule *broken;
	if (vt_features_check_deps(dev->device_id, features, &broken) < 0) {
		char req[256];
		vt_features_str(dev->device_id, broken->requires_all | broken->requires_any, req,
				sizeof(req));
		snprintf(buf, size, "%s accepted without %s%s (virtio %s)",
			 vt_feature_name(dev->device_id, broken->bit),
			 broken->requires_any ? "one of " : "", req, broken->spec);
		return buf;
	}
	return NULL;
}

static void device_reset_locked(struct vt_device *dev)
{
	dev->driver_features = 0;
	dev->negotiated = 0;
	dev->needs_reset_logged = false;
	atomic_store_explicit(&dev->status, 0, memory_order_release);
}

int vt_device_set_status(struct vt_device *dev, uint8_t status)
{
	/* The driver never owns DEVICE_NEEDS_RESET: ignore it in what the driver writes. */
	status &= (uint8_t)~VIRTIO_CONFIG_S_NEEDS_RESET;

	pthread_mutex_lock(&dev->lock);
	uint8_t old = vt_device_status(dev);
	uint8_t device_bits = old & VIRTIO_CONFIG_S_NEEDS_RESET;
	uint8_t old_driver_bits = old & (uint8_t)~VIRTIO_CONFIG_S_NEEDS_RESET;

	if (status == 0) {
		device_reset_locked(dev);
		pthread_mutex_unlock(&dev->lock);
		if (dev->ops->reset)
			dev->ops->reset(dev->opaque);
		return 0;
	}

	const char *violation = NULL;
	if (old_driver_bits & ~status)
		violation = "driver cleared a status bit without a reset (virtio 2.1.1)";
	else if ((status & VIRTIO_CONFIG_S_DRIVER) && !(status & VIRTIO_CONFIG_S_ACKNOWLEDGE))
		violation = "DRIVER set before ACKNOWLEDGE (virtio 3.1.1)";
	else if ((status & VIRTIO_CONFIG_S_FEATURES_OK) && !(status & VIRTIO_CONFIG_S_DRIVER))
		violation = "FEATURES_OK set before DRIVER (virtio 3.1.1)";
	else if ((status & VIRTIO_CONFIG_S_DRIVER_OK) && !(status & VIRTIO_CONFIG_S_FEATURES_OK))
		violation = "DRIVER_OK set without FEATURES_OK (virtio 3.1.1)";
	else if ((status & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK))
		violation =
		    "DRIVER_OK set in the same write as FEATURES_OK, before the driver could "
		    "re-read it (virtio 3.1.1)";
	if (violation) {
		pthread_mutex_unlock(&dev->lock);
		vt_log(dev->log, VT_LOG_ERROR, "%s: status 0x%02x refused: %s", dev->name, status,
		       violation);
		return -EPROTO;
	}

	bool features_ok_now =
	    (status & VIRTIO_CONFIG_S_FEATURES_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK);
	bool driver_ok_now =
	    (status & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_DRIVER_OK);
	uint64_t features = dev->driver_features;
	const struct vt_device_ops *ops = dev->ops;
	char why[512];
	const char *problem = NULL;

	if (features_ok_now)
		problem = features_problem(dev, features, why, sizeof(why));
	pthread_mutex_unlock(&dev->lock);

	/* The model's veto runs unlocked: it may call back into the device (config). */
	if (features_ok_now && !problem && ops->features_ok) {
		int r = ops->features_ok(dev->opaque, features);
		if (r < 0) {
			snprintf(why, sizeof(why), "the device model refused the feature set (%d)",
				 r);
			problem = why;
		}
	}

	pthread_mutex_lock(&dev->lock);
	if (vt_device_status(dev) != old) {
		/* Reset or another write raced with the veto: let the driver retry. */
		pthread_mutex_unlock(&dev->lock);
		return -EAGAIN;
	}
	if (features_ok_now) {
		if (problem)
			status &= (uint8_t)~VIRTIO_CONFIG_S_FEATURES_OK;
		else
			dev->negotiated = features;
	}
	atomic_store_explicit(&dev->status, status | device_bits, memory_order_release);
	pthread_mutex_unlock(&dev->lock);

	if (problem)
		vt_log(dev->log, VT_LOG_ERROR, "%s: FEATURES_OK refused: %s", dev->name, problem);
	if (driver_ok_now && ops->driver_ok)
		ops->driver_ok(dev->opaque);
	return 0;
}

void vt_device_needs_reset(struct vt_device *dev, const char *reason)
{
	pthread_mutex_lock(&dev->lock);
	bool first = !dev->needs_reset_logged;
	dev->needs_reset_logged = true;
	atomic_fetch_or_explicit(&dev->status, VIRTIO_CONFIG_S_NEEDS_RESET, memory_order_acq_rel);
	pthread_mutex_unlock(&dev->lock);
	if (!first)
		return;
	vt_log(dev->log, VT_LOG_ERROR, "%s: DEVICE_NEEDS_RESET: %s", dev->name,
	       reason ? reason : "(no reason given)");
	if (dev->ops->config_changed)
		dev->ops->config_changed(dev->opaque);
}

bool vt_device_is_broken(const struct vt_device *dev)
{
	return (vt_device_status(dev) & VIRTIO_CONFIG_S_NEEDS_RESET) != 0;
}

static int config_range_ok(const struct vt_device *dev, uint32_t offset, uint32_t len)
{
	return offset <= dev->config_size && len <= dev->config_size - offset;
}

int vt_device_config_read(struct vt_device *dev, uint32_t offset, void *buf, uint32_t len)
{
	pthread_mutex_lock(&dev->lock);
	int ok = config_range_ok(dev, offset, len);
	if (ok)
		memcpy(buf, dev->config + offset, len);
	pthread_mutex_unlock(&dev->lock);
	return ok ? 0 : -EINVAL;
}

int vt_device_config_write(struct vt_device *dev, uint32_t offset, const void *buf, uint32_t len)
{
	if (!config_range_ok(dev, offset, len))
		return -EINVAL;
	if (!dev->ops->config_write)
		return -EPERM;
	int r = dev->ops->config_write(dev->opaque, offset, buf, len);
	if (r < 0)
		return r;
	pthread_mutex_lock(&dev->lock);
	memcpy(dev->config + offset, buf, len);
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

int vt_device_config_update(struct vt_device *dev, uint32_t offset, const void *buf, uint32_t len)
{
	pthread_mutex_lock(&dev->lock);
	if (!config_range_ok(dev, offset, len)) {
		pthread_mutex_unlock(&dev->lock);
		return -EINVAL;
	}
	/* 2.5.1: the generation changes whenever the config may read differently. */
	atomic_fetch_add_explicit(&dev->config_generation, 1, memory_order_acq_rel);
	memcpy(dev->config + offset, buf, len);
	bool notify = (vt_device_status(dev) & VIRTIO_CONFIG_S_DRIVER_OK) != 0;
	pthread_mutex_unlock(&dev->lock);
	if (notify && dev->ops->config_changed)
		dev->ops->config_changed(dev->opaque);
	return 0;
}

uint32_t vt_device_config_generation(const struct vt_device *dev)
{
	return atomic_load_explicit(&((struct vt_device *)dev)->config_generation,
				    memory_order_acquire);
}

uint32_t vt_device_config_size(const struct vt_device *dev)
{
	return dev->config_size;
}
