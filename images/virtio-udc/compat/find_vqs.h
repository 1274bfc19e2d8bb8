/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Out-of-tree builds only: kernels 6.9 and 6.10 take virtqueue callbacks
 * and names as two arrays; 6.11 replaced them with struct virtqueue_info,
 * which the driver uses. Kbuild force-includes this file when the
 * kernel it builds against has no struct virtqueue_info, so the driver
 * itself stays written for the current API.
 */
#ifndef _VIRTIO_UDC_COMPAT_FIND_VQS_H
#define _VIRTIO_UDC_COMPAT_FIND_VQS_H

#include <linux/virtio_config.h>

#define VUDC_COMPAT_MAX_VQS	8

struct virtqueue_info {
	const char *name;
	vq_callback_t *callback;
	bool ctx;
};

static inline int vudc_compat_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
				       struct virtqueue *vqs[],
				       struct virtqueue_info vqs_info[],
				       struct irq_affinity *desc)
{
	vq_callback_t *callbacks[VUDC_COMPAT_MAX_VQS];
	const char *names[VUDC_COMPAT_MAX_VQS];
	unsigned int i;

	if (nvqs > VUDC_COMPAT_MAX_VQS)
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		callbacks[i] = vqs_info[i].callback;
		names[i] = vqs_info[i].name;
	}
	return virtio_find_vqs(vdev, nvqs, vqs, callbacks, names, desc);
}

#define virtio_find_vqs vudc_compat_find_vqs

#endif /* _VIRTIO_UDC_COMPAT_FIND_VQS_H */
