/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Out-of-tree builds only: the device ID a submission adds to
 * include/uapi/linux/virtio_ids.h, next to the others. 63 is provisional
 * (docs/virtio-udc.md, section 1), not allocated by the virtio
 * specification. Kbuild force-includes this file while the kernel it
 * builds against has no VIRTIO_ID_UDC, so the driver takes the ID from
 * <linux/virtio_ids.h> as every virtio driver does; this is the only
 * definition of it on the C side.
 */
#ifndef _VIRTIO_UDC_COMPAT_VIRTIO_IDS_H
#define _VIRTIO_UDC_COMPAT_VIRTIO_IDS_H

#include <linux/virtio_ids.h>

#define VIRTIO_ID_UDC			63 /* virtio USB device controller */

#endif /* _VIRTIO_UDC_COMPAT_VIRTIO_IDS_H */
