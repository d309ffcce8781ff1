/* SPDX-License-Identifier: MIT */
/*
 * vhost-user front-end, the driver object's transport: status, features and config space as
 * vhost-user messages, so negotiation runs through driver.c with its dependency rules and the
 * restricted-memory policy. FEATURES_OK is where SET_FEATURES goes out; a refusal clears it, as a
 * device would.
 */
#include <errno.h>
#include <string.h>

#include "transport/vhost_user_frontend_impl.h"
#include "virtue/spec/virtio_config.h"

static uint32_t tr_device_id(void *t)
{
	struct vt_vu_frontend *fe = t;
	return fe->params.device_id;
}

static uint64_t tr_get_device_features(void *t)
{
	struct vt_vu_frontend *fe = t;
	return fe->offered;
}

static int tr_set_driver_features(void *t, uint64_t features)
{
	struct vt_vu_frontend *fe = t;
	fe->driver_features = features;
	return 0;
}

static uint8_t tr_get_status(void *t)
{
	struct vt_vu_frontend *fe = t;
	uint64_t status;

	/* The back-end adds NEEDS_RESET when a queue broke; without STATUS only our copy exists. */
	if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_STATUS) &&
	    fe_get_u64(fe, VHOST_USER_GET_STATUS, &status) == 0 && status <= 0xff)
		return (uint8_t)status;
	return fe->status;
}

static int tr_set_status(void *t, uint8_t status)
{
	struct vt_vu_frontend *fe = t;
	bool has_status = fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_STATUS);
	int rc;

	if (status == 0) {
		if (fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_RESET_DEVICE)) {
			struct vt_vu_msg msg = { .hdr.request = VHOST_USER_RESET_DEVICE };
			rc = fe_request(fe, &msg, true);
		} else {
			rc = has_status ? fe_send_u64(fe, VHOST_USER_SET_STATUS, 0, true) : 0;
		}
		if (rc == 0)
			fe->status = 0;
		return rc;
	}
	if ((status & VIRTIO_CONFIG_S_FEATURES_OK) && !(fe->status & VIRTIO_CONFIG_S_FEATURES_OK)) {
		uint64_t wire = fe->driver_features;
		if (fe->offered_raw & VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES))
			wire |= VT_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
		rc = fe_send_u64(fe, VHOST_USER_SET_FEATURES, wire, true);
		if (rc < 0 && fe->broken)
			return rc;
		if (rc < 0) /* refused: FEATURES_OK does not stick, as a device clears it */
			status &= (uint8_t)~VIRTIO_CONFIG_S_FEATURES_OK;
	}
	if (has_status) {
		rc = fe_send_u64(fe, VHOST_USER_SET_STATUS, status, true);
		if (rc < 0)
			return rc;
	}
	fe->status = status;
	return 0;
}

/*
 * GET_CONFIG / SET_CONFIG of @len bytes at @offset, the header filled in: -ENOTSUP without the
 * CONFIG protocol feature, -EINVAL for a range outside the config space vhost-user carries.
 */
static int config_msg(struct vt_vu_frontend *fe, uint32_t request, uint32_t offset, uint32_t len,
		      struct vt_vu_msg *msg)
{
	if (!fe_has_protocol(fe, VHOST_USER_PROTOCOL_F_CONFIG))
		return -ENOTSUP;
	if (len == 0 || offset > VHOST_USER_MAX_CONFIG_SIZE ||
	    len > VHOST_USER_MAX_CONFIG_SIZE - offset)
		return -EINVAL;
	*msg = (struct vt_vu_msg){
		.hdr = { .request = request, .size = VHOST_USER_CONFIG_HDR_SIZE + len },
	};
	msg->payload.config.offset = offset;
	msg->payload.config.size = len;
	return 0;
}

static int tr_read_config(void *t, uint32_t offset, void *buf, uint32_t len)
{
	struct vt_vu_frontend *fe = t;
	struct vt_vu_msg msg;

	int rc = config_msg(fe, VHOST_USER_GET_CONFIG, offset, len, &msg);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&fe->io_lock);
	rc = fe_call_locked(fe, &msg, VHOST_USER_CONFIG_HDR_SIZE + len);
	if (rc == 0 && (msg.payload.config.offset != offset || msg.payload.config.size != len))
		rc = fe_break(fe, -EPROTO, "GET_CONFIG", "reply for another offset or size");
	pthread_mutex_unlock(&fe->io_lock);
	if (rc == 0)
		memcpy(buf, msg.payload.config.region, len);
	return rc;
}

static int tr_write_config(void *t, uint32_t offset, const void *buf, uint32_t len)
{
	struct vt_vu_frontend *fe = t;
	struct vt_vu_msg msg;

	int rc = config_msg(fe, VHOST_USER_SET_CONFIG, offset, len, &msg);
	if (rc < 0)
		return rc;
	msg.payload.config.flags = VHOST_SET_CONFIG_TYPE_FRONTEND;
	memcpy(msg.payload.config.region, buf, len);
	return fe_request(fe, &msg, true);
}

static uint32_t tr_config_generation(void *t)
{
	struct vt_vu_frontend *fe = t;
	/* Bumped by CONFIG_CHANGE_MSG on the channel thread; a counter only. */
	return atomic_load_explicit(&fe->config_generation, memory_order_acquire);
}

const struct vt_transport_ops fe_transport_ops = {
	.device_id = tr_device_id,
	.get_device_features = tr_get_device_features,
	.set_driver_features = tr_set_driver_features,
	.get_status = tr_get_status,
	.set_status = tr_set_status,
	.read_config = tr_read_config,
	.write_config = tr_write_config,
	.config_generation = tr_config_generation,
};
